"""Errors: stage + kind + message. Per-file failures become row values, never crashes;
a `JobError` stops a whole job with a message naming the cause and the fix."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorStage(StrEnum):
    """Where in the data flow a file failed."""

    LIST = "list"
    READ = "read"
    DECODE = "decode"
    SEGMENT = "segment"
    INFER = "infer"
    WRITE = "write"


class ErrorKind(StrEnum):
    """What went wrong, coarse enough to count in a summary."""

    NOT_FOUND = "not_found"
    PERMISSION_DENIED = "permission_denied"
    UNREACHABLE = "unreachable"
    EMPTY_FILE = "empty_file"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT = "corrupt"
    TRUNCATED = "truncated"
    NO_AUDIO = "no_audio"
    NON_FINITE = "non_finite_samples"
    TOO_LARGE = "too_large"
    TOO_LONG = "too_long"
    MODEL_ERROR = "model_error"
    MODEL_CRASH = "model_crash"  # the model failed fatally on this file alone, every attempt
    DECODER_CRASH = "decoder_crash"  # decoding it crashed the worker process, every attempt
    INTERNAL = "internal"


class EarmarkError(Exception):
    """A per-file failure with its stage and kind; turned into an `error` row by the pipeline."""

    def __init__(self, stage: ErrorStage, kind: ErrorKind, message: str):
        super().__init__(message)
        self.stage = ErrorStage(stage)
        self.kind = ErrorKind(kind)
        self.message = message

    def __str__(self) -> str:
        return f"[{self.stage}/{self.kind}] {self.message}"


class JobError(Exception):
    """An infrastructure failure that stops a whole job (unwritable output, missing weights...).

    The message names the cause and the fix; the CLI prints it without a traceback.
    """


def validation_problems(errors: list[dict[str, Any]], where: str = "spec") -> list[str]:
    """`field.path: message` per pydantic error (`exc.errors()`): what a user must fix, named
    by the path they wrote. `where` names an error about the whole document."""
    return [f"{'.'.join(str(p) for p in e['loc']) or where}: {e['msg']}" for e in errors]
