"""Serve benchmark: throughput and latency at several client counts, `@serve.batch` on vs off.

For each model (by default whisper tiny.en and the tiny offline eureka stand-in, one after the
other in one run), the same application is deployed twice on one local Serve — batching on
(`max_batch_size`, default 32) at /on and off (`max_batch_size=1`) at /off, otherwise identical:
the same deployment, the same `max_ongoing_requests`, the same model batch size, one replica
each — and both are driven with 1, 8 and 32 concurrent closed-loop HTTP clients posting the demo
speech clips to /v1/annotate. Each level sends `rounds × clients` requests (at least
`min_requests`) after a warm-up; only one app is driven at a time, and the levels alternate which
one goes first, so that other load on a shared machine falls on both sides alike.

Per level it reports requests/s, audio seconds per wall second, p50/p99 latency, the model calls
the replica made and how many requests each held (the replica's own counters, read before and
after the level), how busy the model was (the rows' `infer_s` summed over the wall time: with one
replica it stays at or under 100 % unless calls overlap) and the load average; then the on/off
ratios and checks: thread settings inside the replicas fit their CPUs; batches larger than 1
formed with batching on; with it off, every model call held one request and calls never
overlapped; no request failed.

The eureka stand-in (`eureka-tiny`, built offline in the work dir) has random weights that never
emit the end token, so every request decodes exactly `max_new_tokens` tokens: the generation
work per request is fixed, which makes on/off comparable; its figures measure the serving path's
use of batching for a generative model, not the real checkpoint's speed.
"""

from __future__ import annotations

import math
import socket
from typing import Any

from earmark.bench.serve_bench_drive import bench_model, threads_text
from earmark.bench.serve_bench_results import ModelBench, format_bench, results_json
from earmark.bench.serve_bench_setup import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MODELS,
    MODES,
    bench_spec,
    load_clips,
    plan_cpus,
    resolve_model,
)
from earmark.serve.config import ServeSpec

# `earmark bench serve` imports these from here: the entry point and what it needs to call it
__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_MODELS",
    "bench_spec",
    "format_bench",
    "load_clips",
    "resolve_model",
    "results_json",
    "run_serve_bench",
]

DEFAULT_CONCURRENCY = (1, 8, 32)


def conditions_of(spec: ServeSpec, size: Any, clips: list, info: dict) -> dict[str, Any]:
    from earmark.bench.common import conditions

    r, b = spec.resources, spec.batching
    on_cpu = spec.model.device == "cpu" or (r.annotator_num_gpus == 0 and size.gpus == 0)
    return conditions(
        model=spec.model_id,
        device="cpu" if on_cpu else spec.model.device,
        dtype=spec.model.dtype,
        ray_cpus=size.cpus,
        ray_gpus=size.gpus,
        replicas=spec.autoscaling.min_replicas,
        replica_cpus=r.annotator_num_cpus,
        replica_gpus=r.annotator_num_gpus,
        replica_threads=" / ".join(
            f"{m}: {threads_text(t)}" for m, t in info.get("threads", {}).items()
        ),
        ingress=f"{spec.ingress.num_replicas} x {spec.ingress.num_cpus:g} CPU",
        max_batch_size=f"{b.max_batch_size} on / 1 off",
        batch_wait_timeout_s=b.batch_wait_timeout_s,
        model_batch_size=spec.model.batch_size,
        max_ongoing_requests=spec.model_replica_max_ongoing(),
        max_new_tokens=spec.model.max_new_tokens,
        pack_windows=spec.model.pack_windows if spec.model.family == "whisper" else "n/a",
        tasks=",".join(t.name for t in spec.tasks),
        clips=f"{len(clips)} demo speech clips, {sum(c[2] for c in clips):.1f} s",
        order="levels alternate which mode runs first; both apps stay deployed",
        load_1m=f"{info.get('load_start', float('nan'))} at start, "
        f"{info.get('load_end', float('nan'))} at end",
    )


def run_serve_bench(
    specs: ServeSpec | list[ServeSpec],
    clips: list[tuple[str, bytes, float]],
    *,
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY,
    rounds: int = 4,
    min_requests: int = 16,
    port: int | None = None,
    log: Any = print,
) -> list[ModelBench]:
    """Every model, batching on and off side by side, on one local Serve: the Ray already
    running, or an embedded one with the machine's cores as logical CPUs, or more where the
    two deployed apps need more (they are never driven at the same time). Pass specs through
    `bench_spec` first."""
    import ray
    from ray import serve

    from earmark.compute.resources import init_ray
    from earmark.contracts import JobError

    specs = [specs] if isinstance(specs, ServeSpec) else list(specs)
    need = max(plan_cpus(s) for s in specs)
    res = specs[0].resources.model_copy()
    if not ray.is_initialized() and res.cluster_cpus is None:
        from earmark.bench.common import usable_cores

        res.cluster_cpus = math.ceil(max(need, usable_cores()))
    size = init_ray(None, res)
    for spec in specs:
        if plan_cpus(spec) > size.cpus:
            raise JobError(
                f"the bench deploys {spec.model_id} twice (batching on and off) and needs "
                f"{plan_cpus(spec):g} logical CPUs; the Ray cluster has {size.cpus:g}"
            )
        gpus = len(MODES) * spec.resources.annotator_num_gpus * spec.autoscaling.min_replicas
        if gpus > size.gpus:
            raise JobError(
                f"the bench deploys {spec.model_id} twice and needs {gpus:g} GPUs; the cluster "
                f"has {size.gpus:g} (use a fractional resources.annotator_num_gpus)"
            )
    port = port or _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    try:
        out = []
        for spec in specs:
            info: dict[str, Any] = {}
            results = bench_model(spec, url, clips, concurrency, rounds, min_requests, log, info)
            cond = conditions_of(spec, size, clips, info)
            out.append(ModelBench(spec.model_id, cond, results, info.get("threads", {})))
        return out
    finally:
        serve.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
