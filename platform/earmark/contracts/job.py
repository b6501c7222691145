"""The job spec and its parts: model, resources, failure rules, limits.

Everything that enters as YAML or CLI flags is validated here, at construction, so a bad value
is named where it enters."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earmark.contracts.families import family
from earmark.contracts.tasks import TaskRequest, parse_tasks


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
    batch_size: int = Field(
        default=8,
        ge=1,
        le=512,
        description="Windows per model call (engine vllm: every window of a block goes in one "
        "call and the engine schedules the rows itself, up to its max_num_seqs)",
    )
    max_new_tokens: int = Field(default=256, ge=1, le=8192, description="Generation limit per task")
    pack_windows: bool = Field(
        default=True,
        description="whisper: lay short windows of one call end to end in shared 30 s encoder "
        "inputs (fewer encoder passes; see models/whisper_pack.py); other families ignore it",
    )
    min_speech_s: float = Field(
        default=0.25,
        ge=0,
        le=30,
        description="asr: a window in which silero-vad finds less speech than this (seconds) is "
        "never sent to the model for asr; its transcript is empty and flagged no_speech. Other "
        "tasks still run on it. 0 sends every window. 0.25 s is silero-vad's shortest speech",
    )
    drop_flagged: bool = Field(
        default=False,
        description="asr: leave the text of flagged segments (filler, repetition, truncated, "
        "low_confidence, no_speech) out of the transcript; the segments keep their flags",
    )
    word_timestamps: bool = Field(
        default=True,
        description="whisper: word start/end times in each segment (faster-whisper's "
        "cross-attention alignment); other families give none",
    )
    engine: Literal["hf", "vllm"] = Field(
        default="hf",
        description="What runs the model: hf (earmark's own transformers code, the reference) "
        "or vllm (continuous batching, paged KV cache, prefix caching; midashenglm and moss "
        "only; needs an environment with vLLM: `make vllm-env`, on CUDA `VLLM_TARGET=cuda "
        "make vllm-env`)",
    )
    language: str | None = Field(
        default=None,
        min_length=2,
        max_length=8,
        pattern=r"^[a-z]{2,3}(-[A-Za-z]{2,4})?$",
        description="whisper: transcribe in this language (a code such as 'de'), which also "
        "lets a multilingual checkpoint pack windows; unset: English-only checkpoints use "
        "English, multilingual ones detect it per window. Families that cannot take it refuse it",
    )

    @classmethod
    def parse(cls, text: str, **kw: Any) -> ModelSpec:
        """`FAMILY` or `FAMILY:CHECKPOINT` (a hub id or a local directory)."""
        family, _, checkpoint = text.partition(":")
        return cls(family=family.strip(), checkpoint=checkpoint.strip() or None, **kw)

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        family(v)  # a known family, or the import path of an AudioModel subclass
        return v

    @model_validator(mode="after")
    def _options_fit_family(self) -> ModelSpec:
        info = family(self.family)
        if self.engine not in info.engines:
            raise ValueError(
                f"model family {info.name!r} cannot run on engine {self.engine!r} (it runs on: "
                f"{', '.join(info.engines)}); vLLM serves midashenglm and moss"
            )
        for name in FAMILY_OPTIONS:
            if getattr(self, name) is not None and name not in info.options:
                raise ValueError(
                    f"model family {info.name!r} takes no {name!r} option (it takes: "
                    f"{', '.join(info.options) or 'none'})"
                )
        return self

    def identity(self) -> dict[str, Any]:
        """What names this model in a job id: family options left unset are left out, so
        adding an option never changes the id of an existing output."""
        dump = self.model_dump()
        dump = {k: v for k, v in dump.items() if not (k in FAMILY_OPTIONS and v is None)}
        if self.engine == "hf":  # the default, left out so that existing job ids stay
            dump.pop("engine")
        return dump


FAMILY_OPTIONS = ("language",)  # options only some families take; None means unset


class ActorResources(BaseModel):
    """What one Annotator needs (a batch pool's actor and a Serve replica alike), and the size of
    an embedded local Ray; `earmark.compute.resources` makes them Ray options."""

    model_config = ConfigDict(extra="forbid")

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
    cluster_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of the embedded local Ray (default: the machine's)"
    )

    @model_validator(mode="after")
    def _check_custom_resources(self) -> ActorResources:
        for name, amount in self.annotator_resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory") or name.startswith("node:"):
                raise ValueError(
                    f"annotator_resources: {name!r} is Ray's own resource; use "
                    "annotator_num_cpus / annotator_num_gpus for CPUs and GPUs"
                )
            if amount <= 0:
                raise ValueError(f"annotator_resources.{name} must be > 0, got {amount:g}")
        return self


class ResourceSpec(ActorResources):
    """A batch job's resources: what each Annotator needs, and the plan around it (decode
    tasks, the actor pool, files per call, how long to wait for lost nodes)."""

    decode_num_cpus: float = Field(default=1.0, gt=0, description="CPUs per decode task")
    min_actors: int = Field(default=1, ge=1, description="Actor pool minimum size")
    max_actors: int = Field(default=1, ge=1, description="Actor pool maximum size")
    files_per_batch: int = Field(
        default=8, ge=1, le=4096, description="Files handed to one Annotator call"
    )
    node_loss_grace_s: float = Field(
        default=120.0,
        ge=0,
        description="Seconds a running job waits for nodes (an autoscaler adding them) once the "
        "alive nodes can no longer run its plan, before it stops with an error",
    )

    @model_validator(mode="after")
    def _check_pool(self) -> ResourceSpec:
        if self.min_actors > self.max_actors:
            raise ValueError(
                f"min_actors ({self.min_actors}) is larger than max_actors ({self.max_actors})"
            )
        return self


class FailureSpec(BaseModel):
    """How a job treats fatal model failures (device, driver, a crashed process): never rows,
    retried with a bound; see `earmark.annotate.failures`."""

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


class OutputFilesSpec(BaseModel):
    """How the output is cut into files (rows are identical whatever the sizes)."""

    model_config = ConfigDict(extra="forbid")

    target_file_mb: float = Field(
        default=128.0,
        gt=0,
        le=4096,
        description="Committed Parquet files are folded from annotated batches until they hold "
        "about this many MB (64 MB-1 GB suits DuckDB, Polars, Spark and Ray Data); a job "
        "commits whatever is left when it ends",
    )


class JobSpec(BaseModel):
    """A whole annotation (or scan) job, as written in `jobs/*.yaml` or built from CLI flags."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        description="fsspec URL with optional glob, or a .parquet/.jsonl/.csv manifest"
    )
    output: str = Field(description="Output directory URL (local path, s3://, ...)")
    output_files: OutputFilesSpec = Field(
        default_factory=OutputFilesSpec, description="Sizes of the committed output files"
    )
    audio_column: str | None = Field(
        default=None,
        description="Packed Parquet sources: the column holding the audio (bytes, or the "
        "Hugging Face Audio struct {bytes, path}); found by its type when unset",
    )
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
                [self.source, self.output, self.model.identity(), [t.name for t in self.tasks]],
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
