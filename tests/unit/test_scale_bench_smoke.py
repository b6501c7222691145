"""`earmark bench scale` at minimal sizes: the report's structure and that its counts agree with
the corpus (never timings). Every scan is its own `earmark scan` process with an embedded Ray."""

from __future__ import annotations

import json

import pytest

from earmark.bench.scale_bench import DASH, bench_scale
from earmark.bench.scale_corpus import FILES_PER_DIR, SEEDS, build_scale_corpus

SIZES = [300, 600]
CLIPS = 20


def test_corpus_links_nested_folders_and_manifest(tmp_path):
    c = build_scale_corpus(tmp_path / "c", 2 * FILES_PER_DIR + 5)
    folders = sorted(p for p in c["files"].iterdir())
    assert len(folders) == 3 and all(len(list(f.iterdir())) <= FILES_PER_DIR for f in folders)
    lines = [json.loads(x) for x in c["manifest"].read_text().splitlines()]
    assert len(lines) == 2 * FILES_PER_DIR + 5 and len({x["uri"] for x in lines}) == len(lines)
    assert build_scale_corpus(tmp_path / "c", 2 * FILES_PER_DIR + 5)["reused"]
    assert len(c["manifest"].read_text().splitlines()) == 2 * FILES_PER_DIR + 5


@pytest.mark.slow
def test_scale_bench_report_is_consistent(tmp_path, capsys):
    json_path = tmp_path / "scale.json"
    res = bench_scale(SIZES, str(tmp_path / "w"), json_path=json_path, warmup=False)
    out = capsys.readouterr().out
    seconds = {n: sum(SEEDS[i % len(SEEDS)][2] for i in range(n)) for n in SIZES}
    for n in SIZES:
        r = res["runs"][str(n)]
        first, done, new = r["first"], r["rerun_done"], r["rerun_new"]
        k = r["new_files"]
        assert k == max(1, round(n / 100))
        assert (first["files_listed"], first["files_done_before"], first["files_ok"]) == (n, 0, n)
        assert first["files_error"] == 0 and first["output_rows"] == n
        assert first["audio_s"] == pytest.approx(seconds[n], rel=1e-3)
        assert first["first_file_s"] is not None and first["driver_peak_rss_mb"] > 0
        assert first["files_per_s"] > 0 and first["audio_s_per_s"] > 0
        assert r["output_files"] == first["output_files"] >= 1 and r["median_file_mb"] > 0
        assert (done["files_listed"], done["files_done_before"], done["rows"]) == (n, n, 0)
        assert done["output_rows"] == n
        assert (new["files_listed"], new["files_done_before"]) == (n + k, n)
        assert new["files_ok"] == new["rows"] == k and new["output_rows"] == n + k
        assert r["duckdb_distinct"] == n + k
    assert res["checks"]["count"].startswith("met")
    cond = res["conditions"]
    assert cond["cores"] >= 1 and len(cond["load_before"]) == len(cond["load_after"]) == 3
    assert cond["ray"] and cond["date"] and cond["python"]
    # the printed table: a column per size, run or not ("—")
    header = next(line for line in out.splitlines() if line.startswith("|") and "10k" in line)
    assert [c.strip() for c in header.strip("|").split("|")][1:6] == [
        "300", "600", "10k", "100k", "1M"
    ]  # fmt: skip
    rss = next(line for line in out.splitlines() if line.startswith("| driver peak RSS"))
    assert [c.strip() for c in rss.strip("|").split("|")][3:6] == [DASH] * 3
    assert "load_before=" in out and "ray=" in out
    saved = json.loads(json_path.read_text())
    assert saved["runs"]["600"]["duckdb_distinct"] == 606 and "packed" not in saved


@pytest.mark.slow
def test_packed_comparison_scans_the_same_clips(tmp_path, capsys):
    res = bench_scale([], str(tmp_path / "w"), packed=True, packed_clips=CLIPS, warmup=False)
    out = capsys.readouterr().out
    packed = res["packed"]
    assert "warmup_s" not in res
    for form in ("loose", "parquet", "webdataset"):
        p = packed[form]
        assert (p["files_ok"], p["files_error"], p["output_rows"]) == (CLIPS, 0, CLIPS), form
        assert p["audio_s"] == pytest.approx(packed["loose"]["audio_s"], rel=1e-3), form
    for form in ("parquet", "webdataset"):
        assert packed[form]["audio_s_per_s_ratio"] > 0 and packed[form]["files_per_s_ratio"] > 0
    assert "Packed input vs loose files" in out and "webdataset" in out
    assert "earmark scan at archive scale" not in out


@pytest.mark.slow
def test_s3_prefix_gets_the_same_four_measurements(tmp_path, capsys):
    n = 300
    res = bench_scale([], str(tmp_path / "w"), s3_objects=n, warmup=False)
    out = capsys.readouterr().out
    r = res["s3"]
    first, done, new, k = r["first"], r["rerun_done"], r["rerun_new"], r["new_files"]
    assert (r["source"], r["n"], r["prefix"], k) == ("s3", n, "s3://audio/files", 3)
    assert (first["files_listed"], first["files_done_before"], first["files_ok"]) == (n, 0, n)
    assert first["files_error"] == 0 and first["output_rows"] == n
    assert r["output_files"] >= 1 and r["upload_s"] > 0 and r["upload_new_s"] > 0
    assert (done["files_listed"], done["files_done_before"], done["rows"]) == (n, n, 0)
    assert (new["files_listed"], new["files_done_before"]) == (n + k, n)
    assert new["files_ok"] == new["rows"] == k and new["output_rows"] == n + k
    assert r["duckdb_distinct"] == n + k
    assert "runs" in res and not res["runs"] and "checks" not in res
    assert "earmark scan of an S3 prefix (SeaweedFS on 127.0.0.1)" in out
    assert "earmark scan at archive scale" not in out
    listed = next(line for line in out.splitlines() if line.startswith("| files listed"))
    assert [c.strip() for c in listed.strip("|").split("|")][1] == f"{n} / {n}"
