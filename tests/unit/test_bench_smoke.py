"""Benchmarks at minimal sizes: they run and return positive figures (no Ray here).

The decode and run benchmarks need Ray: their smoke tests are in tests/integration.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from earmark.audio.decode import decode_audio
from earmark.bench.common import TreeMonitor, conditions, table
from earmark.bench.corpus import FORMATS, link_copies, mixed_corpus, repeated_demo
from earmark.bench.decode_bench import format_decode, loop_decode, timed_loop
from earmark.bench.model_bench import bench_model, padding_table, window_durations


def _positive_numbers(d) -> list[float]:
    if isinstance(d, dict):
        return [x for v in d.values() for x in _positive_numbers(v)]
    if isinstance(d, list):
        return [x for v in d for x in _positive_numbers(v)]
    if isinstance(d, bool | str) or d is None:
        return []
    return [float(d)]


@pytest.mark.slow
def test_model_bench_smoke(tmp_path, capsys):
    res = bench_model(
        str(tmp_path),
        batch_sizes=(1, 2),
        throughput_windows=2,
        encode_once_windows=2,
        padding_windows=64,
        measured_windows=4,
        max_new_tokens=2,
        repeats=1,
    )
    out = capsys.readouterr().out
    assert set(res["windows_per_s"]) == {"eureka", "midashenglm", "moss", "whisper"}
    for fam, rates in res["windows_per_s"].items():
        assert set(rates) == {1, 2} and all(v > 0 for v in rates.values()), fam
    for fam, e in res["encode_once"].items():
        assert e["once_s"] > 0 and e["three_s"] > 0 and e["ratio"] > 0, fam
        # the backend contract: one call encodes each window once, three calls three times
        assert e["passes_three"] == 3 * e["passes_once"] > 0, fam
    assert set(res["encode_once"]) == {"eureka", "midashenglm", "moss"}
    for fam, m in res["measured_padding"].items():
        assert 0 <= m["bucketed"] <= m["arrival"] < 1, fam
    assert all(math.isfinite(x) and x >= 0 for x in _positive_numbers(res))
    assert res["conditions"]["cores"] >= 1 and res["conditions"]["cpu_model"]
    assert "(a) asr+caption+tags" in out and "windows per second" in out


def test_bucketing_cuts_padding_below_target():
    durations = window_durations(512, seed=0)
    assert min(durations) >= 1.0 and max(durations) <= 30.0
    assert window_durations(512, seed=0) == durations  # fixed seed: same figures every run
    for row in padding_table(durations, (8, 32)):
        assert row["bucketed"] <= 0.10 < row["arrival"]


@pytest.mark.slow
def test_mixed_corpus_formats_and_reuse(tmp_path):
    files = mixed_corpus(tmp_path / "c", hours=0.1)  # 6 min: 1+2+3 min files
    assert [f.suffix for f in files] == [f".{e}" for e in FORMATS[: len(files)]]
    seconds = 0.0
    for f in files:
        with open(f, "rb") as fh:
            a = decode_audio(fh, what=str(f))
        assert a.samples is not None and np.abs(a.samples).max() > 0.01  # not silence
        seconds += a.duration_s
    assert seconds >= 0.1 * 3600 - 1
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert [f.stat().st_mtime_ns for f in mixed_corpus(tmp_path / "c", hours=0.1)] == mtimes
    audio, wall, cpu = loop_decode(files[:2], keep_samples=False)
    assert audio == pytest.approx(180.0, abs=0.5) and wall > 0 and cpu > 0
    t = timed_loop(files[:1], keep_samples=False)  # under the monitor the scan runs under
    assert t["audio_s"] == pytest.approx(60.0, abs=0.5) and t["cpu_s"] > 0
    assert t["x"] == pytest.approx(t["audio_s"] / t["wall_s"])


def test_decode_report_names_every_run():
    r = {
        "files": 20, "audio_hours": 1.0, "cores_used": 2, "repeats": 2,
        "loop_resample_x": 500.0, "loop_resample_per_cpu": 600.0,
        "loop_probe_x": 800.0, "loop_probe_per_cpu": 850.0, "loop_probe_runs_x": [780.0, 800.0],
        "scan_x": 1200.0, "scan_per_core_x": 600.0, "per_core_ratio_vs_probe_loop": 0.75,
        "scan_per_cpu": 700.0, "scan_runs_x": [1200.0, 1100.0],
        "conditions": conditions(repeats=2),
    }  # fmt: skip
    text = format_decode(r)
    assert "| earmark scan on Ray, 1× corpus | 2 " in text and "0.75" in text
    assert "probe loop 780, 800; 1× scan 1200, 1100" in text and "fastest run" in text
    assert "Peak RSS" not in text  # no 10× run: no memory table


def test_link_copies_gives_distinct_names_same_bytes(tmp_path, demo_dir):
    files, seconds = repeated_demo(tmp_path / "r", minutes=2.0, demo=demo_dir)
    assert seconds >= 120 and len(files) % 14 == 0 and len(set(files)) == len(files)
    big = link_copies(files[:3], tmp_path / "big", 4)
    assert len(big) == 12 and len({f.name for f in big}) == 12
    assert big[0].read_bytes() == files[0].read_bytes()


def test_tree_memory_sees_a_child_process():
    import subprocess
    import sys

    code = (
        "import time; x = bytearray(200 << 20); x[::4096] = b'1' * len(x[::4096]); time.sleep(1.5)"
    )
    with TreeMonitor(interval_s=0.05) as mem:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert mem.peak_processes >= 2
    assert mem.peak_single_mib >= 200 and mem.peak_mib > mem.peak_single_mib
    assert mem.cpu_s > 0.02  # the child's start-up and its 200 MB of page writes


def test_table_and_conditions():
    text = table(["a", "b"], [["x", 1.23456], ["yy", 12345.6]])
    assert text.splitlines()[0] == "| a  | b      |" and "1.23" in text and "12,346" in text
    c = conditions(extra=1)
    assert c["cores"] >= 1 and c["extra"] == 1 and "load_avg_1m" in c


def test_serve_bench_off_differs_only_in_batch_size_and_checks_read_the_replica():
    from earmark.bench.serve_bench_results import LevelResult, ModelBench
    from earmark.bench.serve_bench_setup import bench_spec, mode_spec
    from earmark.serve.config import ServeSpec

    base = ServeSpec.model_validate(
        {"model": {"family": "eureka", "batch_size": 8}, "autoscaling": {"max_replicas": 3}}
    )
    spec = bench_spec(base, max_batch_size=32, batch_wait_timeout_s=0.2, max_new_tokens=64)
    on, off = mode_spec(spec, "on").model_dump(), mode_spec(spec, "off").model_dump()
    assert on["batching"]["max_batch_size"] == 32 and off["batching"]["max_batch_size"] == 1
    assert {k: v for k, v in on["batching"].items() if k != "max_batch_size"} == {
        k: v for k, v in off["batching"].items() if k != "max_batch_size"
    }  # the same wait settings both ways
    assert on["batching"]["batch_wait_timeout_s"] == 0.2
    on.pop("batching"), off.pop("batching")
    assert on == off  # the same deployment otherwise: a fair "off"
    assert spec.model.batch_size == 32 and spec.model.max_new_tokens == 64  # one model call
    assert spec.max_ongoing_requests == 64  # pinned: not derived from max_batch_size=1 when off
    assert spec.autoscaling.min_replicas == spec.autoscaling.max_replicas == 1

    def level(mode, clients, batches, busy=0.9):
        n = sum(k * v for k, v in batches.items())
        return LevelResult(
            mode, clients, n, 0, 1.0, n, n, 1.0, 2.0, 1.0, calls=sum(batches.values()),
            call_batches=batches, busy=busy,
        )  # fmt: skip

    cond = {"replica_cpus": 1.0}
    one = {"on": {"torch": 1}, "off": {"torch": 1}}
    good = ModelBench("m", cond, [level("on", 8, {8: 2}), level("off", 8, {1: 16})], one)
    assert all(good.checks().values()), good.checks()
    assert good.results[0].call_mean_batch == 8 and good.results[0].call_max_batch == 8
    bad = ModelBench("m", cond, [level("on", 8, {1: 16}), level("off", 8, {1: 14, 2: 1}, 1.6)])
    c = bad.checks()
    assert not c["on_batches_above_1"] and not c["off_one_request_per_call"]
    assert not c["off_calls_never_overlap"] and not c["threads_within_replica_cpus"]
    two = {"on": {"OMP_NUM_THREADS": "2", "torch": 2}}
    assert not ModelBench("m", cond, good.results, two).checks()["threads_within_replica_cpus"]
