"""The typed contracts at earmark's boundaries: job spec, output row, errors.

Everything that crosses a boundary (YAML → job, job → Parquet, HTTP → row) is one of these
models, validated at construction so that a bad value is named where it enters.
The Arrow schema of the output is declared here once (`OUTPUT_SCHEMA`) and snapshotted under
`schemas/` by `earmark schemas export`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from enum import StrEnum
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earmark import __version__

# ---------------------------------------------------------------------------------------------
# Errors: stage + kind + message. Per-file failures become row values, never crashes.
# ---------------------------------------------------------------------------------------------


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


class ErrorInfo(BaseModel):
    """The error part of an output row."""

    stage: ErrorStage = Field(description="Pipeline stage where the file failed")
    kind: ErrorKind = Field(description="Failure category, used for the summary's counts")
    message: str = Field(description="Readable message naming the problem")


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------

BUILTIN_TASKS = ("asr", "caption", "tags")
_TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class TaskRequest(BaseModel):
    """One thing to ask of every window: a built-in task or a named custom prompt."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="asr, caption, tags, or the name of a custom prompt")
    prompt: str | None = Field(default=None, description="Prompt text for a custom task")

    @model_validator(mode="after")
    def _check(self) -> TaskRequest:
        if not _TASK_NAME.match(self.name):
            raise ValueError(
                f"task name {self.name!r} must be lowercase letters, digits or '_' (≤40 chars)"
            )
        if self.name in BUILTIN_TASKS and self.prompt is not None:
            raise ValueError(f"built-in task {self.name!r} takes no prompt")
        if self.name not in BUILTIN_TASKS and not (self.prompt and self.prompt.strip()):
            raise ValueError(
                f"unknown task {self.name!r}: use one of {', '.join(BUILTIN_TASKS)} "
                f'or a custom prompt written name="prompt text"'
            )
        return self

    @property
    def is_custom(self) -> bool:
        return self.name not in BUILTIN_TASKS


def parse_tasks(items: str | list[str] | list[TaskRequest]) -> list[TaskRequest]:
    """Parse `asr,caption,tags` or `["asr", 'mood="What mood is this?"']` into task requests."""
    if isinstance(items, str):
        items = _split_task_list(items)
    out: list[TaskRequest] = []
    for item in items:
        if isinstance(item, TaskRequest):
            out.append(item)
            continue
        if isinstance(item, dict):
            out.append(TaskRequest(**item))
            continue
        text = str(item).strip()
        if "=" in text:
            name, prompt = text.split("=", 1)
            out.append(TaskRequest(name=name.strip(), prompt=prompt.strip().strip('"').strip("'")))
        else:
            out.append(TaskRequest(name=text))
    names = [t.name for t in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"task(s) requested twice: {', '.join(sorted(dup))}")
    if not out:
        raise ValueError("no task requested: give at least one of asr, caption, tags")
    return out


def _split_task_list(text: str) -> list[str]:
    """Split on commas that are not inside a quoted prompt (prompts may contain commas).

    A quote opens only where a prompt starts (right after `=`), so an apostrophe elsewhere is
    a letter; a quote that never closes is an error, not a silently shortened prompt.
    """
    parts: list[str] = []
    buf: list[str] = []
    quote = None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'" and "".join(buf).rstrip().endswith("="):
            quote = ch
        elif ch == ",":
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if quote:
        raise ValueError(f"unterminated {quote} quote in tasks {text!r}")
    parts.append("".join(buf))
    return [p for p in (p.strip() for p in parts) if p]


# ---------------------------------------------------------------------------------------------
# Job spec
# ---------------------------------------------------------------------------------------------


class ModelSpec(BaseModel):
    """Which model runs and how it is loaded."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(
        default="eureka", description="Model family: eureka, midashenglm, moss, whisper"
    )
    checkpoint: str | None = Field(
        default=None, description="Hub id or local directory; the family default when empty"
    )
    revision: str | None = Field(default=None, description="Hub revision (commit) to pin")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when available, else CPU"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bfloat16 on CUDA, float32 on CPU"
    )
    batch_size: int = Field(default=8, ge=1, le=512, description="Windows per model call")
    max_new_tokens: int = Field(default=256, ge=1, le=8192, description="Generation limit per task")
    pack_windows: bool = Field(
        default=True,
        description="whisper: lay short windows of one call end to end in shared 30 s encoder "
        "inputs (fewer encoder passes; see models/whisper_pack.py); other families ignore it",
    )

    @classmethod
    def parse(cls, text: str, **kw: Any) -> ModelSpec:
        """`FAMILY` or `FAMILY:CHECKPOINT` (a hub id or a local directory)."""
        family, _, checkpoint = text.partition(":")
        return cls(family=family.strip(), checkpoint=checkpoint.strip() or None, **kw)

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        from earmark.models.registry import family

        family(v)  # a known family, or the import path of an AudioModel subclass
        return v


class ResourceSpec(BaseModel):
    """Resources as plain data; `earmark.resources` makes them Ray options (batch and Serve)."""

    model_config = ConfigDict(extra="forbid")

    decode_num_cpus: float = Field(default=1.0, gt=0, description="CPUs per decode task")
    annotator_num_cpus: float = Field(default=1.0, ge=0, description="CPUs per Annotator actor")
    annotator_num_gpus: float = Field(
        default=0.0, ge=0, description="GPUs per Annotator actor (fractional allowed)"
    )
    annotator_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per Annotator actor: {gpu_node: 0.001} places it only "
        "on nodes started with `ray start --resources '{\"gpu_node\": 1}'` (a tiny amount "
        "limits nothing else)",
    )
    min_actors: int = Field(default=1, ge=1, description="Actor pool minimum size")
    max_actors: int = Field(default=1, ge=1, description="Actor pool maximum size")
    files_per_batch: int = Field(
        default=8, ge=1, le=4096, description="Files handed to one Annotator call"
    )
    cluster_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of the embedded local Ray (default: the machine's)"
    )
    node_loss_grace_s: float = Field(
        default=120.0,
        ge=0,
        description="Seconds a running job waits for nodes (an autoscaler adding them) once the "
        "alive nodes can no longer run its plan, before it stops with an error",
    )

    @model_validator(mode="after")
    def _check(self) -> ResourceSpec:
        if self.min_actors > self.max_actors:
            raise ValueError(
                f"min_actors ({self.min_actors}) is larger than max_actors ({self.max_actors})"
            )
        for name, amount in self.annotator_resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory") or name.startswith("node:"):
                raise ValueError(
                    f"annotator_resources: {name!r} is Ray's own resource; use "
                    "annotator_num_cpus / annotator_num_gpus for CPUs and GPUs"
                )
            if amount <= 0:
                raise ValueError(f"annotator_resources.{name} must be > 0, got {amount:g}")
        return self


class FailureSpec(BaseModel):
    """How a job treats fatal model failures (device, driver, a crashed process): never rows,
    retried with a bound; see `earmark.failures`."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Model attempts a file gets in fatally failing calls before it is "
        "quarantined as an infer/model_crash row (the rest of its batch is annotated)",
    )
    max_consecutive_fatal: int = Field(
        default=6,
        ge=1,
        le=1000,
        description="Fatal failures in a row, with no file annotated between them, before "
        "the job stops: the device or the model is broken, not a file",
    )
    max_fatal_failures: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Fatal failures in the whole job before it stops (also bounds Ray's "
        "actor restarts and task retries)",
    )


class LimitsSpec(BaseModel):
    """Per-file limits; past them a file gets an error row instead of exhausting a worker."""

    model_config = ConfigDict(extra="forbid")

    max_file_bytes: int = Field(default=4 << 30, ge=1, description="Larger files are refused")
    max_duration_s: float = Field(
        default=4 * 3600.0,
        gt=0,
        description="Longer audio is refused (decoded mono 16 kHz costs 230 MB per hour)",
    )
    read_retries: int = Field(default=3, ge=0, le=20, description="Retries of a transient read")


class JobSpec(BaseModel):
    """A whole annotation (or scan) job, as written in `jobs/*.yaml` or built from CLI flags."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="fsspec URL with optional glob, or a .parquet/.jsonl/.csv manifest"
    )
    output: str = Field(description="Output directory URL (local path, s3://, ...)")
    tasks: list[TaskRequest] = Field(
        default_factory=lambda: parse_tasks("asr"), description="Tasks asked of every file"
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="Model to run")
    resources: ResourceSpec = Field(default_factory=ResourceSpec, description="Ray resources")
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description="Per-file limits")
    failures: FailureSpec = Field(
        default_factory=FailureSpec, description="Retries and stop rules for fatal model failures"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options (endpoint, credentials...)"
    )
    job_id: str | None = Field(
        default=None, description="Job id; derived from source, output, model and tasks when empty"
    )

    @field_validator("tasks", mode="before")
    @classmethod
    def _parse_tasks(cls, v: Any) -> Any:
        return parse_tasks(v) if isinstance(v, str | list) else v

    @field_validator("source", "output")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @model_validator(mode="after")
    def _derive_job_id(self) -> JobSpec:
        if self.job_id is None:
            key = json.dumps(
                [self.source, self.output, self.model.model_dump(), [t.name for t in self.tasks]],
                sort_keys=True,
            )
            self.job_id = "em-" + hashlib.sha256(key.encode()).hexdigest()[:12]
        return self

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> JobSpec:
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a job spec must be a mapping, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


# ---------------------------------------------------------------------------------------------
# Output row
# ---------------------------------------------------------------------------------------------


class Segment(BaseModel):
    start_s: float = Field(description="Window start in the file, seconds")
    end_s: float = Field(description="Window end in the file, seconds")
    transcript: str | None = Field(default=None, description="Transcript of this window")


class Answer(BaseModel):
    name: str = Field(description="Custom task name")
    prompt: str = Field(description="Prompt text as asked")
    text: str = Field(description="Model answer, windows joined in order")


class OutputRow(BaseModel):
    """One row per input file, whatever happened to it. Unrequested task columns are null."""

    audio_id: str = Field(description="Stable id from the normalized URI, size and etag/mtime")
    uri: str = Field(description="Normalized URI of the file")
    size_bytes: int | None = Field(default=None, description="Object size in bytes")
    status: Literal["ok", "error", "skipped"] = Field(description="Outcome for this file")
    error_stage: ErrorStage | None = Field(default=None, description="Stage that failed")
    error_kind: ErrorKind | None = Field(default=None, description="Failure category")
    error: str | None = Field(default=None, description="Readable error message")
    duration_s: float | None = Field(default=None, description="Decoded duration, seconds")
    source_sample_rate: int | None = Field(default=None, description="Sample rate of the file, Hz")
    source_channels: int | None = Field(default=None, description="Channels in the file")
    codec: str | None = Field(default=None, description="Audio codec (FFmpeg name)")
    container: str | None = Field(default=None, description="Container format (FFmpeg name)")
    transcript: str | None = Field(default=None, description="ASR transcript (task asr)")
    segments: list[Segment] | None = Field(default=None, description="Per-window transcripts")
    caption: str | None = Field(default=None, description="Audio caption (task caption)")
    tags: list[str] | None = Field(default=None, description="Normalized labels (task tags)")
    tags_raw: str | None = Field(default=None, description="Raw model text for tags")
    answers: list[Answer] | None = Field(default=None, description="Custom prompt answers")
    model: str | None = Field(default=None, description="family:checkpoint that annotated")
    model_revision: str | None = Field(default=None, description="Checkpoint revision")
    earmark_version: str = Field(default=__version__, description="earmark version")
    job_id: str | None = Field(default=None, description="Job that wrote the row")
    created_at: Any = Field(default=None, description="UTC timestamp the row was made")
    decode_s: float | None = Field(default=None, description="Wall seconds spent decoding")
    infer_s: float | None = Field(default=None, description="Wall seconds spent in the model")
    num_windows: int | None = Field(default=None, description="Model windows the file was cut into")
    meta: dict[str, str] | None = Field(
        default=None, description="Extra manifest columns carried through, as strings"
    )


_SEGMENT = pa.struct(
    [("start_s", pa.float64()), ("end_s", pa.float64()), ("transcript", pa.string())]
)
_ANSWER = pa.struct([("name", pa.string()), ("prompt", pa.string()), ("text", pa.string())])

OUTPUT_SCHEMA = pa.schema(
    [
        ("audio_id", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),
        ("error_stage", pa.string()),
        ("error_kind", pa.string()),
        ("error", pa.string()),
        ("duration_s", pa.float64()),
        ("source_sample_rate", pa.int32()),
        ("source_channels", pa.int32()),
        ("codec", pa.string()),
        ("container", pa.string()),
        ("transcript", pa.string()),
        ("segments", pa.list_(_SEGMENT)),
        ("caption", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("tags_raw", pa.string()),
        ("answers", pa.list_(_ANSWER)),
        ("model", pa.string()),
        ("model_revision", pa.string()),
        ("earmark_version", pa.string()),
        ("job_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("decode_s", pa.float64()),
        ("infer_s", pa.float64()),
        ("num_windows", pa.int32()),
        ("meta", pa.map_(pa.string(), pa.string())),
    ]
)

assert OUTPUT_SCHEMA.names == list(OutputRow.model_fields), "Arrow schema and OutputRow drifted"


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Build an output table with the fixed schema; missing keys become nulls."""
    cols = {name: [r.get(name) for r in rows] for name in OUTPUT_SCHEMA.names}
    cols["meta"] = [list(m.items()) if isinstance(m, dict) else m for m in cols["meta"]]
    return pa.table(cols, schema=OUTPUT_SCHEMA)
