"""`earmark bench engine` at a minimal size: both engines run the same windows, give the same
text, and every figure is a measured positive number (the CPU/tiny figures are in the README)."""

from __future__ import annotations

import pytest

from earmark.bench.engine_bench import bench_engine


@pytest.mark.slow
def test_engine_bench_smoke(tmp_path, capsys):
    res = bench_engine("moss", windows=3, max_new_tokens=2, repeats=1, workdir=str(tmp_path))
    out = capsys.readouterr().out
    for engine in ("hf", "vllm"):
        r = res[engine]
        assert r["audio_s_per_s"] > 0 and r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0
    assert res["hf"]["padding"] > 0 and res["vllm"]["padding"] == 0  # windows of 3 lengths
    assert res["same_text"] == "9/9"  # 3 windows x 3 tasks, engine for engine
    # one encoder pass per window sent, whatever the number of tasks
    assert 0 < res["vllm"]["encoder_items_per_window"] <= 1
    assert "| vllm" in out and "Conditions:" in out


def test_a_family_without_vllm_is_refused():
    with pytest.raises(ValueError, match="'eureka' has no vLLM engine"):
        bench_engine("eureka")
