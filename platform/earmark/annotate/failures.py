"""The failure policy, in one place: which model failures are rows and which are the machine's.

| failure                                               | becomes                              |
|-------------------------------------------------------|--------------------------------------|
| the input's fault: `ModelInputError` (empty, too long, | an `infer/model_error` row; the rest |
| NaN features, a prompt the tokenizer refuses)          | of the batch is annotated            |
| out of memory in a batch of several windows           | the batch is split in halves, retried |
| anything else: a device or driver error, out of       | `FatalModelError`: never a row. Batch:|
| memory on one window, a bug, a crashed process        | the actor exits, Ray restarts it and |
|                                                       | the batch is retried; Serve: the     |
|                                                       | replica turns unhealthy, 503         |

Decode tasks use the same rules with a ledger of their own: a file whose decoding keeps
crashing its process (a native decoder bug, an OOM kill) becomes a `decode/decoder_crash` row
after `max_attempts`, and every other file of its group is decoded.

A batch that keeps failing fatally is narrowed down file by file (`AttemptLedger`): after
`max_attempts` attempts a file is quarantined as an `infer/model_crash` row and every other file
is annotated. A job whose model fails `max_consecutive_fatal` times in a row with no file
annotated between, or `max_fatal_failures` times in all, stops with the last error: that is a
broken device, driver or checkpoint, and error rows would only hide it.

Why a crashed process counts: a segfault in a native kernel or an OOM kill leaves no Python
error to catch. The ledger notices it when the same files come back (an attempt that was begun
and never ended) and counts it as a fatal failure with that cause.
"""

from __future__ import annotations

import enum
import os
import sys
from dataclasses import dataclass, field

from earmark.contracts import FailureSpec
from earmark.models.base import ModelInputError

# What an attempt that was begun and never ended means (no Python error reached earmark).
PROCESS_DIED = "the worker process died (a crash in native code, or killed for memory)"
# Message fragments of out-of-memory errors from torch (CUDA and CPU allocators) and CTranslate2.
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


class FailureKind(enum.StrEnum):
    INPUT = "input"  # the window's fault: an error row
    OUT_OF_MEMORY = "out_of_memory"  # retry smaller; fatal on a single window
    FATAL = "fatal"  # the machine's or the model's fault: never a row


class FatalModelError(RuntimeError):
    """The model or its device failed, not the input. Raised out of the Annotator."""


class JobStopped(RuntimeError):
    """The failure policy stopped the job (the model fails on everything)."""


def classify(exc: BaseException) -> FailureKind:
    """Which kind of failure an exception from a model call is."""
    if isinstance(exc, ModelInputError):
        return FailureKind.INPUT
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return FailureKind.OUT_OF_MEMORY
    text = str(exc).lower()
    if any(m in text for m in OOM_MARKERS):
        return FailureKind.OUT_OF_MEMORY
    return FailureKind.FATAL


def describe(exc: BaseException) -> str:
    """One line naming the exception, for rows, logs and 503 bodies."""
    text = (str(exc).strip().splitlines() or [""])[0][:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def release_memory() -> None:
    """Return cached device memory before a smaller retry (only if torch is already loaded)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class _FileState:
    attempts: int = 0
    last_error: str = ""
    open_token: int | None = None  # the attempt running now (or that died)


@dataclass
class AttemptLedger:
    """Attempts per file and fatal failures per job, shared by every Annotator of a job.

    A plain class: the batch job runs it as one Ray actor (`earmark.batch.ledger`), unit tests
    in process. Files are forgotten once annotated, so it holds only files in flight."""

    spec: FailureSpec = field(default_factory=FailureSpec)
    what: str = "the model"  # what runs between begin and end: "the model", "the decoder"
    files: dict[str, _FileState] = field(default_factory=dict)
    open_attempts: dict[int, list[str]] = field(default_factory=dict)
    next_token: int = 0
    successes: int = 0  # files annotated in this job
    fatal: int = 0  # fatal failures in this job, crashed processes included
    consecutive: int = 0  # fatal failures since the last file annotated
    stopped: str = ""  # why the job stops; empty while it runs
    quarantined: int = 0
    starts: dict[str, int] = field(default_factory=dict)  # Annotator starts per actor id

    def actor_started(self, actor_id: str) -> None:
        self.starts[actor_id] = self.starts.get(actor_id, 0) + 1

    def attempts(self, audio_ids: list[str]) -> dict[str, int]:
        """Earlier attempts of the files that have any (a file never tried is absent)."""
        return {a: self.files[a].attempts for a in audio_ids if a in self.files}

    def may_quarantine(self, audio_id: str) -> str | None:
        """The error row message when this file has used its attempts, else None.

        Only once the model has annotated some file in this job: before that, a file failing
        every attempt cannot be told from a model failing on everything."""
        self._resolve_crashed([audio_id])
        st = self.files.get(audio_id)
        if st is None or st.attempts < self.spec.max_attempts or self.successes == 0:
            return None
        self.files.pop(audio_id)
        self.quarantined += 1
        return (
            f"{self.what} failed fatally on this file in {st.attempts} attempts, alone in the "
            f"last ones (last error: {st.last_error or PROCESS_DIED})"
        )

    def begin(self, audio_ids: list[str]) -> int:
        """Record an attempt of these files; returns its token. Raises JobStopped once the
        job has stopped."""
        self._resolve_crashed(audio_ids)
        if self.stopped:
            raise JobStopped(self.stopped)
        token, self.next_token = self.next_token, self.next_token + 1
        for a in audio_ids:
            st = self.files.setdefault(a, _FileState())
            st.attempts += 1
            st.open_token = token
        self.open_attempts[token] = list(audio_ids)
        return token

    def _resolve_crashed(self, audio_ids: list[str]) -> None:
        """An earlier attempt of any of these files that never ended took its process down."""
        for token in {self.files[a].open_token for a in audio_ids if a in self.files} - {None}:
            self._failed(self.open_attempts.pop(token, []), PROCESS_DIED)

    def succeed(self, token: int) -> None:
        for a in self.open_attempts.pop(token, []):
            self.files.pop(a, None)
            self.successes += 1
        self.consecutive = 0

    def fail(self, token: int, error: str) -> str:
        """Record a fatal failure of an attempt; returns why the job stops, or ''."""
        self._failed(self.open_attempts.pop(token, []), error)
        return self.stopped

    def _failed(self, audio_ids: list[str], error: str) -> None:
        for a in audio_ids:
            st = self.files.get(a)
            if st is not None:
                st.last_error, st.open_token = error, None
        self.fatal += 1
        self.consecutive += 1
        if self.stopped:
            return
        if self.consecutive >= self.spec.max_consecutive_fatal:
            self.stopped = (
                f"{self.what} failed fatally {self.consecutive} times in a row with no file "
                f"annotated in between (last error: {error}): the device, driver or checkpoint "
                "is broken, not a file. Files not annotated have no rows; fix the cause and "
                "rerun to resume"
            )
        elif self.fatal >= self.spec.max_fatal_failures:
            self.stopped = (
                f"{self.what} failed fatally {self.fatal} times in this job "
                f"(failures.max_fatal_failures; last error: {error}). Files not annotated have "
                "no rows; fix the cause and rerun to resume"
            )

    def stats(self) -> dict[str, int | str]:
        return {
            "fatal_failures": self.fatal,
            "files_quarantined": self.quarantined,
            "annotator_restarts": sum(n - 1 for n in self.starts.values()),
            "stopped": self.stopped,
        }


FATAL_EXIT_CODE = 70  # an Annotator process that exits on a fatal failure (EX_SOFTWARE)


def actor_id() -> str:
    """This Ray actor's id (the same across its restarts); the pid outside Ray. Never starts
    Ray: `ray.get_runtime_context()` would, in a process that has not."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        actor = ray.get_runtime_context().get_actor_id()
        if actor:
            return actor
    return f"pid-{os.getpid()}"


def exit_for_restart(error: str) -> None:
    """End this process so Ray restarts the actor on a fresh device context and retries the
    batch: after a device error (illegal access, lost GPU) the process's CUDA state is not
    usable again, and no error row may be written for files that were not at fault."""
    print(f"earmark Annotator: fatal model failure, restarting: {error}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(FATAL_EXIT_CODE)
