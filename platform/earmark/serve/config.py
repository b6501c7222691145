"""The Serve spec: one validated document for the model, its resources, batching, autoscaling,
request limits and the URL policy. It is what `serve_app/*.yaml` passes to the app builder as
`args`, and what `earmark serve --config` reads. The model and resources parts are the same
`ModelSpec` and the `ActorResources` a batch job's Annotators use, turned into Ray options by the
same function.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earmark.compute.resources import ClusterSize, annotator_options
from earmark.contracts import ActorResources, JobError, ModelSpec, TaskRequest, parse_tasks

APP_NAME = "earmark"
DEFAULT_MAX_UPLOAD_BYTES = 25 << 20  # 25 MiB: OpenAI's transcription upload limit
DEFAULT_MAX_DURATION_S = 1800.0  # 30 min: longer audio belongs in a batch job
MULTIPART_OVERHEAD_BYTES = 64 << 10  # form boundaries and small fields on top of the file
NEVER_SCHEMES = frozenset({"", "file", "local", "memory", "data", "ftp"})  # never fetched


class BatchingSpec(BaseModel):
    """`@serve.batch` settings; changed live through the deployment's user_config."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=16, ge=1, le=256, description="Requests per model call")
    batch_wait_timeout_s: float = Field(
        default=0.05, ge=0, le=10, description="Longest wait for a batch to fill, seconds"
    )
    load_wait_fraction: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description=(
            "Under load (the last model call held more than one request), wait for the next "
            "batch up to this fraction of that call's duration instead of batch_wait_timeout_s, "
            "so the clients a call answered, whose next requests trickle back through the "
            "ingress, fill one batch instead of splitting into two; 0 turns it off"
        ),
    )
    max_load_wait_s: float = Field(
        default=1.0, ge=0, le=10, description="Upper bound of that wait under load, seconds"
    )


class AutoscalingSpec(BaseModel):
    """Serve autoscaling of the model deployment (replicas of the Annotator)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=1, description="Replicas kept warm")
    max_replicas: int = Field(default=1, ge=1, description="Upper bound under load")
    initial_replicas: int | None = Field(default=None, ge=1, description="Replicas at start")
    target_ongoing_requests: float = Field(
        default=16, gt=0, description="Requests in flight per replica the autoscaler aims for"
    )
    upscale_delay_s: float = Field(default=10.0, ge=0, description="Load must last this long")
    downscale_delay_s: float = Field(default=120.0, ge=0, description="Idle this long to shrink")

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is larger than max_replicas "
                f"({self.max_replicas})"
            )
        return self


class ServeLimits(BaseModel):
    """Per-request limits; past them a request gets a 413/422 with a message."""

    model_config = ConfigDict(extra="forbid")

    max_upload_bytes: int = Field(
        default=DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="Largest audio file accepted, bytes"
    )
    max_duration_s: float = Field(
        default=DEFAULT_MAX_DURATION_S, gt=0, description="Longest audio accepted, seconds"
    )
    url_timeout_s: float = Field(default=30.0, gt=0, description="Timeout fetching a URL input")
    body_idle_timeout_s: float = Field(
        default=15.0, gt=0, description="An upload that sends nothing for this long gets a 408"
    )
    body_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="The whole request body must arrive within this many seconds (else 408)",
    )

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: the file as base64 in JSON (4/3) plus the form's overhead."""
        return self.max_upload_bytes * 4 // 3 + 4 + MULTIPART_OVERHEAD_BYTES


class UrlPolicy(BaseModel):
    """Which URL inputs the server may fetch. Local paths and file:// never; private, loopback
    and link-local addresses never (every resolved address is checked)."""

    model_config = ConfigDict(extra="forbid")

    allowed_schemes: list[str] = Field(
        default_factory=lambda: ["s3", "gs", "https"], description="URL schemes accepted"
    )
    allowed_buckets: list[str] = Field(
        default_factory=list, description="Object-store buckets readable (s3/gs/az); none if empty"
    )
    allowed_hosts: list[str] | None = Field(
        default=None, description="http(s) host names accepted; any public host when null"
    )
    allowed_ports: list[int] = Field(
        default_factory=lambda: [80, 443], description="http(s) ports accepted"
    )
    max_redirects: int = Field(default=3, ge=0, le=10, description="http(s) redirects followed")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for object stores (endpoint, keys)"
    )

    @field_validator("allowed_schemes")
    @classmethod
    def _no_local(cls, v: list[str]) -> list[str]:
        v = [s.lower().strip() for s in v]
        bad = sorted(set(v) & NEVER_SCHEMES)
        if bad:
            raise ValueError(f"scheme(s) {', '.join(bad)} can never be allowed: local data")
        return v


class IngressSpec(BaseModel):
    """The HTTP ingress deployment (auth, limits, decoding); light, CPU only."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int = Field(default=1, ge=1, description="Ingress replicas")
    num_cpus: float = Field(default=0.5, ge=0, description="CPUs per ingress replica")
    max_ongoing_requests: int = Field(default=256, ge=1, description="Requests per replica")


# ResourceSpec fields that plan a batch job (not ActorResources), and what Serve sets instead.
BATCH_ONLY_RESOURCES = {
    "min_actors": "use autoscaling.min_replicas",
    "max_actors": "use autoscaling.max_replicas",
    "files_per_batch": "use batching.max_batch_size",
    "decode_num_cpus": "decoding runs in the ingress (ingress.num_cpus)",
    "node_loss_grace_s": "Serve replaces replicas of lost nodes itself",
}


class ServeSpec(BaseModel):
    """Everything `earmark serve` and `serve deploy` need to run the endpoint."""

    model_config = ConfigDict(extra="forbid")

    model: ModelSpec = Field(default_factory=lambda: ModelSpec(family="whisper"))
    tasks: list[TaskRequest] = Field(
        default_factory=lambda: parse_tasks("asr"), description="Tasks when a request names none"
    )
    resources: ActorResources = Field(
        default_factory=ActorResources,
        description="What one replica (one Annotator) needs: annotator_num_*, annotator_resources",
    )
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    limits: ServeLimits = Field(default_factory=ServeLimits)
    urls: UrlPolicy = Field(default_factory=UrlPolicy)
    ingress: IngressSpec = Field(default_factory=IngressSpec)
    model_aliases: list[str] = Field(
        default_factory=lambda: ["whisper-1"],
        description="Extra model names accepted by /v1/audio/transcriptions (OpenAI clients)",
    )
    max_ongoing_requests: int | None = Field(
        default=None, ge=1, description="Per model replica; default 2 × max_batch_size (≥ 32)"
    )
    api_key_env: str = Field(default="EARMARK_API_KEY", description="Env var holding the token")
    health_check_period_s: float = Field(default=10.0, gt=0)
    health_check_timeout_s: float = Field(default=30.0, gt=0)
    graceful_shutdown_wait_loop_s: float = Field(default=2.0, gt=0)
    graceful_shutdown_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("tasks", mode="before")
    @classmethod
    def _parse_tasks(cls, v: Any) -> Any:
        return parse_tasks(v) if isinstance(v, str | list) else v

    @model_validator(mode="before")
    @classmethod
    def _no_batch_job_resources(cls, data: Any) -> Any:
        # a replica is one Annotator (ActorResources); the batch plan's fields used to be
        # accepted and ignored (max_actors: 4 still gave one replica): name what to set instead
        res = data.get("resources") if isinstance(data, dict) else None
        batch_only = sorted(k for k in BATCH_ONLY_RESOURCES if isinstance(res, dict) and k in res)
        if batch_only:
            fixes = "; ".join(f"resources.{k}: {BATCH_ONLY_RESOURCES[k]}" for k in batch_only)
            raise ValueError(f"batch-job settings have no effect on a Serve deployment: {fixes}")
        return data

    @model_validator(mode="after")
    def _no_cross_request_packing_by_default(self) -> ServeSpec:
        # Whisper packing lays several windows into one decode: in a shared endpoint that lets one
        # client's audio shape another client's transcript, and makes a request's text depend on
        # what it was batched with. Serve therefore packs only when the config asks for it.
        if "pack_windows" not in self.model.model_fields_set:
            self.model = self.model.model_copy(update={"pack_windows": False})
            self.model.model_fields_set.add("pack_windows")
        return self

    @model_validator(mode="after")
    def _tasks_fit_model(self) -> ServeSpec:
        from earmark.contracts import family

        info = family(self.model.family)
        for t in self.tasks:
            if (t.is_custom and "custom" not in info.tasks) or (
                not t.is_custom and t.name not in info.tasks
            ):
                raise ValueError(
                    f"default task {t.name!r} is not one model family {info.name!r} can do "
                    f"({', '.join(info.tasks)})"
                )
        return self

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> ServeSpec:
        """A ServeSpec file, or a `serve deploy` config whose first app's args are one."""
        import yaml

        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a serve spec must be a mapping")
        if "applications" in data:  # a Serve config file: take the earmark app's args
            apps = [a for a in data["applications"] if a.get("name") == APP_NAME]
            data = (apps or data["applications"])[0].get("args") or {}
        return cls.model_validate(data)

    @property
    def model_id(self) -> str:
        from earmark.contracts import family

        checkpoint = self.model.checkpoint or family(self.model.family).default_checkpoint
        return f"{self.model.family}:{checkpoint}"

    # -- Ray options, derived in one place ----------------------------------------------------
    def model_replica_max_ongoing(self) -> int:
        # below max_batch_size a replica could never see a full batch
        return self.max_ongoing_requests or max(2 * self.batching.max_batch_size, 32)

    def model_deployment_options(self) -> dict[str, Any]:
        a = self.autoscaling
        return {
            "ray_actor_options": annotator_options(self.resources),
            "autoscaling_config": {
                "min_replicas": a.min_replicas,
                "max_replicas": a.max_replicas,
                "initial_replicas": a.initial_replicas or a.min_replicas,
                "target_ongoing_requests": a.target_ongoing_requests,
                "upscale_delay_s": a.upscale_delay_s,
                "downscale_delay_s": a.downscale_delay_s,
            },
            "max_ongoing_requests": self.model_replica_max_ongoing(),
            "user_config": self.batching.model_dump(),
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }

    def ingress_deployment_options(self) -> dict[str, Any]:
        return {
            "num_replicas": self.ingress.num_replicas,
            "ray_actor_options": {"num_cpus": self.ingress.num_cpus},
            "max_ongoing_requests": self.ingress.max_ongoing_requests,
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
        }


def check_serve_plan(spec: ServeSpec, size: ClusterSize) -> None:
    """Refuse a plan whose replicas cannot all be placed: Serve would wait for them forever."""
    r, a, ing = spec.resources, spec.autoscaling, spec.ingress
    first = a.initial_replicas or a.min_replicas
    cpus = r.annotator_num_cpus * first + ing.num_cpus * ing.num_replicas
    if cpus > size.cpus:
        raise JobError(
            f"this Serve plan cannot start: {first} model replica(s) × "
            f"{r.annotator_num_cpus:g} CPU + {ing.num_replicas} ingress × {ing.num_cpus:g} CPU "
            f"need {cpus:g} CPUs, the cluster has {size.cpus:g}. Lower "
            "resources.annotator_num_cpus or autoscaling.min_replicas."
        )
    gpus = r.annotator_num_gpus * first
    if gpus > size.gpus:
        raise JobError(
            f"{first} model replica(s) × {r.annotator_num_gpus:g} GPU need {gpus:g} GPUs but the "
            f"cluster has {size.gpus:g}: lower resources.annotator_num_gpus (0 runs on CPU)"
        )
