"""The serve benchmark's inputs: which models (the eureka stand-in built offline), the spec both
modes share and the "off" spec derived from it, the CPUs the two apps hold, the speech clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from earmark.serve.config import ServeSpec

TINY_EUREKA = "eureka-tiny"  # --model name of the offline eureka stand-in (built in the work dir)
DEFAULT_MODELS = ("whisper:tiny.en", TINY_EUREKA)
DEFAULT_MAX_BATCH_SIZE = 32  # with batching on: the largest client count fits one model call
DEFAULT_MAX_NEW_TOKENS = 128  # the stand-in always decodes exactly this many tokens
MODES = ("on", "off")


def load_clips(folder: Path) -> list[tuple[str, bytes, float]]:
    """(name, bytes, duration) of the speech clips listed in a demo manifest."""
    from earmark.audio.decode import decode_audio

    clips = []
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if not rec.get("text"):
            continue
        data = (folder / rec["uri"]).read_bytes()
        clips.append((rec["uri"], data, decode_audio(data, keep_samples=False).duration_s))
    if not clips:
        raise ValueError(f"no speech clips in {folder / 'manifest.jsonl'}")
    return clips


# -- which models, with which settings ---------------------------------------------------------


def resolve_model(name: str, workdir: Path) -> str:
    """`FAMILY[:CHECKPOINT]` as given, or `eureka-tiny` → the stand-in built (once) in workdir."""
    if name.strip() != TINY_EUREKA:
        return name
    from earmark.testing.tiny import build_tiny_checkpoint

    path = Path(workdir) / TINY_EUREKA
    if not (path / "config.json").is_file():
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny_checkpoint("eureka", tmp)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return f"eureka:{path}"


def bench_spec(
    spec: ServeSpec,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    batch_wait_timeout_s: float | None = None,
    max_new_tokens: int | None = DEFAULT_MAX_NEW_TOKENS,
    pack_windows: bool | None = None,
) -> ServeSpec:
    """The spec both modes share (the "on" settings); `mode_spec` derives "off" from it.

    The model's batch size (windows per model call) is raised to `max_batch_size`: below it the
    Annotator would split a batch of requests into several model calls. The replica count is
    pinned (no autoscaling mid-run) and `max_ongoing_requests` fixed to the on-mode value, so
    batching off differs in `max_batch_size` alone.
    """
    s = spec.model_copy(deep=True)
    s.batching.max_batch_size = max_batch_size
    if batch_wait_timeout_s is not None:
        s.batching.batch_wait_timeout_s = batch_wait_timeout_s
    if max_new_tokens is not None:
        s.model.max_new_tokens = max_new_tokens
    if pack_windows is not None:  # whisper: Serve leaves packing off unless the config asks
        s.model.pack_windows = pack_windows
    s.model.batch_size = max(s.model.batch_size, max_batch_size)
    s.max_ongoing_requests = s.model_replica_max_ongoing()
    a = s.autoscaling
    a.initial_replicas = a.max_replicas = a.initial_replicas or a.min_replicas
    a.min_replicas = a.max_replicas
    return ServeSpec.model_validate(s.model_dump())


def mode_spec(spec: ServeSpec, mode: str) -> ServeSpec:
    s = spec.model_copy(deep=True)
    if mode == "off":
        s.batching.max_batch_size = 1
    return s


def plan_cpus(spec: ServeSpec) -> float:
    """Logical CPUs the two apps (on and off) hold while deployed; one is driven at a time."""
    r, a, ing = spec.resources, spec.autoscaling, spec.ingress
    replicas = a.initial_replicas or a.min_replicas
    return len(MODES) * (r.annotator_num_cpus * replicas + ing.num_cpus * ing.num_replicas)
