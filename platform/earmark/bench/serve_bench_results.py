"""The serve benchmark's figures: one level's result, one model's on/off results and their
checks, and the Markdown tables and JSON they print as."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

BUSY_TOLERANCE = 1.05  # Σ infer_s / wall above this with batching off: calls overlapped


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
