"""The Ray benchmarks (decode/scan and run) at minimal sizes on the session's local Ray."""

from __future__ import annotations

import pytest

from earmark.bench.decode_bench import bench_decode
from earmark.bench.run_bench import bench_run

pytestmark = pytest.mark.usefixtures("ray_session")


def test_decode_bench_smoke(tmp_path, capsys):
    res = bench_decode(hours=0.02, workdir=str(tmp_path), copies=2)  # 2 files: 1 + 2 min
    assert res["files"] == 2 and res["audio_hours"] == pytest.approx(0.05, abs=0.001)
    for key in ("loop_resample_x", "loop_probe_x", "scan_x", "scan_per_core_x", "scan_per_cpu"):
        assert res[key] > 0, key
    assert res["processes_big"] >= 3  # driver, raylet, gcs at least: the tree was walked
    assert res["per_core_ratio_vs_probe_loop"] > 0
    assert res["scan_big_files"] == 4
    assert res["scan_big_audio_hours"] == pytest.approx(2 * res["audio_hours"], rel=1e-3)
    assert res["peak_rss_1x_mib"] > 100 and res["peak_rss_big_mib"] > 100  # driver + Ray
    assert "Peak RSS" in capsys.readouterr().out


def test_run_bench_smoke(tmp_path, capsys):
    res = bench_run(
        minutes=0.5,  # one demo corpus: 14 files, 55 s
        workdir=str(tmp_path),
        models=("eureka",),
        loop_minutes=0.2,
        memory_minutes=0.5,
        copies=2,
        max_new_tokens=2,
        warmup=False,
    )
    m = res["models"]["eureka"]
    assert m["files"] == 14
    for key in ("earmark_x", "naive_x", "loop_x", "earmark_vs_naive", "earmark_vs_loop"):
        assert m[key] > 0, key
    for key in ("earmark_per_cpu", "naive_per_cpu", "loop_per_cpu", "earmark_vs_naive_per_cpu"):
        assert 0 < m[key] < 1e4, key  # audio s per CPU s: CPU time was counted
    assert 0 < m["loop_files"] < 14
    mem = res["memory"]
    assert mem["big"]["files"] == 2 * mem["1x"]["files"] == 28
    assert mem["1x"]["peak_rss_mib"] > 100 and mem["growth"] > 0
    out = capsys.readouterr().out
    assert "naive Ray Data" in out and "plain loop" in out
