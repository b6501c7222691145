"""Driving the serve benchmark: closed-loop HTTP clients against one deployed app, the model
replica's own counters read before and after each level, and one model's whole on/off run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections import Counter
from typing import Any

from earmark.bench.serve_bench_results import LevelResult, percentile
from earmark.bench.serve_bench_setup import MODES, mode_spec
from earmark.serve.config import APP_NAME, ServeSpec

WARMUP_REQUESTS = 4  # first calls pay lazy initialisation (CT2 kernels, silero, imports)
CLIENT_TIMEOUT_S = 600.0
MODEL_DEPLOYMENT = "Annotator"


# -- driving one level -------------------------------------------------------------------------


async def drive(
    url: str,
    clips: list[tuple[str, bytes, float]],
    clients: int,
    total: int,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`clients` concurrent closed loops share `total` requests to /v1/annotate."""
    import httpx

    out: dict[str, Any] = dict(latencies=[], batches=[], infer_s=0.0, failed=0, audio=0.0)
    out["error"] = ""
    next_i = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < total:
            name, data, dur = clips[next_i % len(clips)]
            next_i += 1
            t0 = time.perf_counter()
            try:
                r = await http.post(
                    f"{url}/v1/annotate", files={"file": (name, data)}, headers=headers
                )
            except httpx.HTTPError as exc:
                out["failed"] += 1
                out["error"] = out["error"] or f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code != 200:
                out["failed"] += 1
                out["error"] = out["error"] or f"HTTP {r.status_code}: {r.text[:300]}"
                continue
            out["latencies"].append(time.perf_counter() - t0)
            out["batches"].append(int(r.headers.get("x-earmark-batch-size", "1")))
            out["infer_s"] += float(r.json().get("infer_s") or 0.0)
            out["audio"] += dur

    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        out["wall"] = time.perf_counter() - t0
    return out


def replica_stats(app_name: str = APP_NAME) -> dict[str, Any]:
    """The model replica's own counters and settings (`AnnotatorDeployment.stats`); {} if
    unreachable. With one replica, every call reaches the same one."""
    from ray import serve

    try:
        handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=app_name)
        return handle.stats.remote().result(timeout_s=60)
    except Exception:  # stats are a cross-check; the figures stand without them
        return {}


def replica_batches(app_name: str = APP_NAME) -> Counter[int]:
    """Requests per model call → calls, as the model replica counted them."""
    stats = replica_stats(app_name)
    return Counter({int(k): int(v) for k, v in stats.get("batch_sizes", {}).items()})


def replica_threads(app_name: str = APP_NAME) -> dict[str, Any]:
    """Thread settings inside the model replica: OMP_NUM_THREADS, torch intra-op, CTranslate2."""
    return {
        k: v for k, v in (replica_stats(app_name).get("threads") or {}).items() if v is not None
    }


def threads_text(threads: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in threads.items()) or "unknown"


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def _level(
    spec: ServeSpec,
    mode: str,
    url: str,
    clips: list[tuple[str, bytes, float]],
    clients: int,
    total: int,
    headers: dict[str, str] | None,
) -> LevelResult:
    """Drive one deployed app at one client count; the replica's counters before and after."""
    before = replica_batches(app_name(mode))
    d = asyncio.run(drive(url, clips, clients, total, headers))
    calls = replica_batches(app_name(mode)) - before
    lat, wall = d["latencies"], d["wall"]
    return LevelResult(
        mode=mode,
        clients=clients,
        requests=total,
        failed=d["failed"],
        wall_s=wall,
        rps=len(lat) / wall,
        audio_x=d["audio"] / wall,
        p50_ms=1000 * percentile(lat, 50) if lat else float("nan"),
        p99_ms=1000 * percentile(lat, 99) if lat else float("nan"),
        mean_batch=statistics.fmean(d["batches"]) if d["batches"] else 0.0,
        model=spec.model_id,
        calls=sum(calls.values()),
        call_batches=dict(sorted(calls.items())),
        busy=d["infer_s"] / wall,
        first_error=d["error"],
        load_1m=_load(),
    )


def app_name(mode: str) -> str:
    return f"{APP_NAME}-bench-{mode}"


def bench_model(
    spec: ServeSpec,
    url: str,
    clips: list[tuple[str, bytes, float]],
    concurrency: tuple[int, ...],
    rounds: int,
    min_requests: int,
    log: Any = print,
    info: dict[str, Any] | None = None,
) -> list[LevelResult]:
    """Deploy the app twice (batching on at /on, off at /off), warm both, then drive each client
    count on both, alternating which goes first, so that load from elsewhere on the machine
    falls on both sides alike; delete both apps."""
    from ray import serve

    from earmark.serve.app import build_application
    from earmark.serve.run import wait_ready

    info = {} if info is None else info
    token = os.environ.get(spec.api_key_env)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    out: list[LevelResult] = []
    try:
        for mode in MODES:
            serve.run(
                build_application(mode_spec(spec, mode)),
                name=app_name(mode),
                route_prefix=f"/{mode}",
                blocking=False,
            )
        for mode in MODES:
            wait_ready(app_name(mode))
        info["load_start"] = _load()
        for mode in MODES:
            asyncio.run(drive(f"{url}/{mode}", clips, 2, WARMUP_REQUESTS, headers))
        # after the warm-up: the model library has set its threads
        info["threads"] = {m: replica_threads(app_name(m)) for m in MODES}
        for i, c in enumerate(concurrency):
            total = max(min_requests, rounds * c)
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                res = _level(spec, mode, f"{url}/{mode}", clips, c, total, headers)
                log(
                    f"{spec.model_id} batch {mode:3s} clients {c:3d}: {res.rps:6.2f} req/s, "
                    f"p50 {res.p50_ms:7.0f} ms, p99 {res.p99_ms:7.0f} ms, {res.calls} model "
                    f"calls (requests per call {res.call_batches}), model busy "
                    f"{100 * res.busy:3.0f} %, load {res.load_1m}, failed {res.failed}"
                    + (f" (first: {res.first_error})" if res.failed else "")
                )
                out.append(res)
        info["load_end"] = _load()
    finally:
        for mode in MODES:
            with contextlib.suppress(Exception):
                serve.delete(app_name(mode))
    return out
