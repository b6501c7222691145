"""Serve benchmark: throughput and latency at several client counts, `@serve.batch` on vs off.

One run deploys the same application twice on one local Serve — batching on (the spec's
`max_batch_size`) and off (`max_batch_size=1`) — and drives each with 1, 8 and 32 concurrent
HTTP clients posting demo clips to /v1/annotate. Each level sends `rounds × clients` requests
(at least `min_requests`) after a warm-up. Reports requests/s, audio seconds per wall second,
p50/p99 latency and the mean model batch size (from the X-Earmark-Batch-Size header), then the
on/off ratios.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from earmark.serve.config import APP_NAME, ServeSpec

DEFAULT_CONCURRENCY = (1, 8, 32)
WARMUP_REQUESTS = 4  # first calls pay lazy initialisation (CT2 kernels, silero, imports)
CLIENT_TIMEOUT_S = 600.0


@dataclass
class LevelResult:
    mode: str  # "on" or "off"
    clients: int
    requests: int
    failed: int
    wall_s: float
    rps: float  # requests per second
    audio_x: float  # audio seconds annotated per wall second
    p50_ms: float
    p99_ms: float
    mean_batch: float


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    xs = sorted(values)
    k = max(0, min(len(xs) - 1, math.ceil(q / 100 * len(xs)) - 1))
    return xs[k]


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


async def drive(
    url: str,
    clips: list[tuple[str, bytes, float]],
    clients: int,
    total: int,
    headers: dict[str, str] | None = None,
) -> tuple[list[float], list[int], float, int, float]:
    """`clients` concurrent loops share `total` requests; (latencies s, batch sizes, wall s,
    failures, audio s)."""
    import httpx

    latencies: list[float] = []
    batches: list[int] = []
    failed = 0
    audio = 0.0
    next_i = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_i, failed, audio
        while next_i < total:
            name, data, dur = clips[next_i % len(clips)]
            next_i += 1
            t0 = time.perf_counter()
            r = await http.post(f"{url}/v1/annotate", files={"file": (name, data)}, headers=headers)
            if r.status_code != 200:
                failed += 1
                continue
            latencies.append(time.perf_counter() - t0)
            batches.append(int(r.headers.get("x-earmark-batch-size", "1")))
            audio += dur

    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, batches, wall, failed, audio


def bench_mode(
    spec: ServeSpec,
    mode: str,
    url: str,
    clips: list[tuple[str, bytes, float]],
    concurrency: tuple[int, ...],
    rounds: int,
    min_requests: int,
    log: Any = print,
) -> list[LevelResult]:
    """Deploy the app with batching on/off, drive every client count, delete the app."""
    from ray import serve

    from earmark.serve.app import build_application
    from earmark.serve.run import wait_ready

    s = spec.model_copy(deep=True)
    if mode == "off":
        s.batching.max_batch_size = 1
    token = os.environ.get(spec.api_key_env)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    serve.run(build_application(s), name=APP_NAME, route_prefix="/")
    wait_ready(APP_NAME)
    asyncio.run(drive(url, clips, 2, WARMUP_REQUESTS, headers))
    out = []
    for c in concurrency:
        total = max(min_requests, rounds * c)
        lat, batches, wall, failed, audio = asyncio.run(drive(url, clips, c, total, headers))
        res = LevelResult(
            mode=mode,
            clients=c,
            requests=total,
            failed=failed,
            wall_s=wall,
            rps=len(lat) / wall,
            audio_x=audio / wall,
            p50_ms=1000 * percentile(lat, 50) if lat else float("nan"),
            p99_ms=1000 * percentile(lat, 99) if lat else float("nan"),
            mean_batch=statistics.fmean(batches) if batches else 0.0,
        )
        log(
            f"batch {mode:3s} clients {c:3d}: {res.rps:6.2f} req/s, p50 {res.p50_ms:7.0f} ms, "
            f"p99 {res.p99_ms:7.0f} ms, mean batch {res.mean_batch:5.1f}, failed {failed}"
        )
        out.append(res)
    serve.delete(APP_NAME)
    return out


def run_serve_bench(
    spec: ServeSpec,
    clips: list[tuple[str, bytes, float]],
    *,
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY,
    rounds: int = 4,
    min_requests: int = 16,
    port: int | None = None,
    log: Any = print,
) -> list[LevelResult]:
    """Both modes on one local Serve (embedded Ray sized by spec.resources)."""
    from ray import serve

    from earmark.resources import init_ray
    from earmark.serve.config import check_serve_plan

    size = init_ray(None, spec.resources)
    check_serve_plan(spec, size)
    port = port or _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    try:
        results = []
        for mode in ("on", "off"):
            results += bench_mode(spec, mode, url, clips, concurrency, rounds, min_requests, log)
        return results
    finally:
        serve.shutdown()


def format_results(results: list[LevelResult]) -> str:
    """Side-by-side table, on vs off, with throughput and latency ratios."""
    on = {r.clients: r for r in results if r.mode == "on"}
    off = {r.clients: r for r in results if r.mode == "off"}
    lines = [
        "clients | batch ON: req/s  audio-s/s  p50 ms  p99 ms  mean batch | batch OFF: req/s  "
        "audio-s/s  p50 ms  p99 ms | ON/OFF: throughput  p50  p99",
    ]
    for c in sorted(on):
        a, b = on[c], off.get(c)
        if b is None:
            continue
        lines.append(
            f"{c:7d} | {a.rps:14.2f} {a.audio_x:10.1f} {a.p50_ms:7.0f} {a.p99_ms:7.0f} "
            f"{a.mean_batch:11.1f} | {b.rps:15.2f} {b.audio_x:10.1f} {b.p50_ms:7.0f} "
            f"{b.p99_ms:7.0f} | {a.rps / b.rps:17.2f}x {a.p50_ms / b.p50_ms:4.2f}x "
            f"{a.p99_ms / b.p99_ms:4.2f}x"
        )
    return "\n".join(lines)


def results_json(results: list[LevelResult]) -> str:
    return json.dumps([asdict(r) for r in results], indent=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
