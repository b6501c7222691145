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

import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from earmark.serve.config import APP_NAME, ServeSpec

DEFAULT_CONCURRENCY = (1, 8, 32)
TINY_EUREKA = "eureka-tiny"  # --model name of the offline eureka stand-in (built in the work dir)
DEFAULT_MODELS = ("whisper:tiny.en", TINY_EUREKA)
DEFAULT_MAX_BATCH_SIZE = 32  # with batching on: the largest client count fits one model call
DEFAULT_MAX_NEW_TOKENS = 128  # the stand-in always decodes exactly this many tokens
WARMUP_REQUESTS = 4  # first calls pay lazy initialisation (CT2 kernels, silero, imports)
CLIENT_TIMEOUT_S = 600.0
BUSY_TOLERANCE = 1.05  # Σ infer_s / wall above this with batching off: calls overlapped
MODEL_DEPLOYMENT = "Annotator"
MODES = ("on", "off")


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
    mean_batch: float  # size of the batch a request rode in (X-Earmark-Batch-Size), averaged
    model: str = ""
    calls: int = 0  # model calls the replica made during this level (its own counters)
    call_batches: dict[int, int] = field(default_factory=dict)  # requests per call → calls
    busy: float = float("nan")  # Σ infer_s of the responses / wall: the model's busy share
    first_error: str = ""
    load_1m: float = float("nan")  # the machine's 1-minute load average after the level

    @property
    def call_mean_batch(self) -> float:
        n = sum(self.call_batches.values())
        return sum(k * v for k, v in self.call_batches.items()) / n if n else float("nan")

    @property
    def call_max_batch(self) -> int:
        return max(self.call_batches, default=0)


@dataclass
class ModelBench:
    """One model's on/off results and the conditions they were taken under."""

    model: str
    conditions: dict[str, Any]
    results: list[LevelResult]
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)  # mode → in the replica

    def checks(self) -> dict[str, bool]:
        on = [r for r in self.results if r.mode == "on" and r.clients > 1 and r.calls]
        off = [r for r in self.results if r.mode == "off" and r.calls]
        cores = max(1, int(self.conditions.get("replica_cpus") or 1))
        counts = [int(v) for t in self.threads.values() for v in t.values() if str(v).isdigit()]
        return {
            "threads_within_replica_cpus": bool(counts) and max(counts) <= cores,
            "on_batches_above_1": bool(on) and all(r.call_max_batch > 1 for r in on),
            "off_one_request_per_call": bool(off) and all(r.call_max_batch == 1 for r in off),
            "off_calls_never_overlap": bool(off) and all(not r.busy > BUSY_TOLERANCE for r in off),
            "no_failures": all(r.failed == 0 for r in self.results),
        }


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


def plan_cpus(spec: ServeSpec) -> float:
    """Logical CPUs the two apps (on and off) hold while deployed; one is driven at a time."""
    r, a, ing = spec.resources, spec.autoscaling, spec.ingress
    replicas = a.initial_replicas or a.min_replicas
    return len(MODES) * (r.annotator_num_cpus * replicas + ing.num_cpus * ing.num_replicas)


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


# -- reporting ---------------------------------------------------------------------------------


def _x(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def _batch_cell(r: LevelResult) -> str:
    if r.calls:
        return f"{r.calls} / {r.call_mean_batch:.1f} / {r.call_max_batch}"
    return f"? / {r.mean_batch:.1f} / ?"  # no replica counters: request-weighted mean only


def _busy(r: LevelResult) -> str:
    return "n/a" if math.isnan(r.busy) else f"{100 * r.busy:.0f} %"


def format_results(results: list[LevelResult]) -> str:
    """Markdown table, batching on vs off side by side, with throughput and latency ratios.

    "calls / mean / max": model calls the replica made at that level, and requests per call;
    "model busy": the responses' model time over the wall time; "load": the machine's load
    average after the level (other work on a shared machine shows there)."""
    from earmark.bench.common import table

    on = {r.clients: r for r in results if r.mode == "on"}
    off = {r.clients: r for r in results if r.mode == "off"}
    rows = []
    for c in sorted(on):
        a, b = on[c], off.get(c)
        if b is None:
            continue
        rows.append(
            [
                c,
                f"{a.rps:.2f}",
                f"{a.p50_ms:.0f} / {a.p99_ms:.0f}",
                _batch_cell(a),
                _busy(a),
                f"{b.rps:.2f}",
                f"{b.p50_ms:.0f} / {b.p99_ms:.0f}",
                _batch_cell(b),
                _busy(b),
                _x(a.rps, b.rps),
                _x(a.p50_ms, b.p50_ms),
                _x(a.p99_ms, b.p99_ms),
                f"{a.load_1m:.1f} / {b.load_1m:.1f}",
            ]
        )
    headers = [
        "clients",
        "ON req/s",
        "ON p50 / p99 ms",
        "ON calls / mean / max batch",
        "ON model busy",
        "OFF req/s",
        "OFF p50 / p99 ms",
        "OFF calls / mean / max batch",
        "OFF model busy",
        "ON/OFF req/s",
        "ON/OFF p50",
        "ON/OFF p99",
        "load 1m ON / OFF",
    ]
    return table(headers, rows)


def format_bench(bench: ModelBench) -> str:
    """Conditions, the table and the checks of one model."""
    from earmark.bench.common import format_conditions

    checks = ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in bench.checks().items())
    return "\n".join(
        [
            f"== {bench.model} ==",
            format_conditions(bench.conditions),
            format_results(bench.results),
            f"Checks: {checks}",
        ]
    )


def results_json(benches: list[ModelBench] | list[LevelResult]) -> str:
    def level(r: LevelResult) -> dict[str, Any]:
        return {
            **asdict(r),
            "call_mean_batch": r.call_mean_batch,
            "call_max_batch": r.call_max_batch,
        }

    if benches and isinstance(benches[0], LevelResult):
        return json.dumps([level(r) for r in benches], indent=2)  # type: ignore[arg-type]
    return json.dumps(
        [
            {
                "model": b.model,
                "conditions": b.conditions,
                "checks": b.checks(),
                "threads": b.threads,
                "results": [level(r) for r in b.results],
            }
            for b in benches  # type: ignore[union-attr]
        ],
        indent=2,
        default=str,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
