"""`earmark scan` on a real local Ray: demo corpus, manifest, S3 prefix, and every bad input."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from audio_factory import tone, write
from earmark.batch.runner import run_job
from earmark.cli import app
from earmark.contracts import OUTPUT_SCHEMA, JobError, JobSpec
from earmark.sink.shards import read_output
from earmark.storage import Location
from paths import DEMO
from servers import S3_READER, upload_demo

pytestmark = pytest.mark.usefixtures("ray_session")


def scan(source: str, out: Path | str, **kw):
    spec = JobSpec(source=str(source), output=str(out), **kw)
    return run_job(spec, with_model=False, progress=False)


def rows_by_name(out, storage_options=None) -> dict[str, dict]:
    rows = read_output(Location(str(out), storage_options)).to_pylist()
    return {Path(r["uri"]).name: r for r in rows}


def test_scan_demo_corpus(tmp_path):
    summary = scan(DEMO, tmp_path / "out")
    rows = rows_by_name(tmp_path / "out")
    audio = sorted(p.name for p in DEMO.iterdir() if p.suffix != ".jsonl" and p.suffix != ".md")
    assert sorted(rows) == audio
    assert all(r["status"] == "ok" for r in rows.values())
    assert all(r["earmark_version"] and r["job_id"] == summary.job_id for r in rows.values())
    assert rows["s08_oak.wav"]["source_channels"] == 2
    assert rows["s08_oak.wav"]["source_sample_rate"] == 44100
    assert rows["s09_football.wav"]["source_sample_rate"] == 8000
    assert rows["s05_library.opus"]["codec"] == "opus"
    assert rows["s06_beach.m4a"]["codec"] == "aac"
    assert summary.files_ok == len(audio) and summary.files_error == 0
    assert summary.audio_hours > 50 / 3600
    on_disk = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert on_disk["files_ok"] == len(audio)
    # the output is plain Parquet with the fixed schema
    for shard in (tmp_path / "out").glob("part-*.parquet"):
        assert pq.read_schema(shard).remove_metadata() == OUTPUT_SCHEMA


def test_rescan_skips_done_files(tmp_path):
    scan(DEMO, tmp_path / "out")
    before = sorted(p.name for p in (tmp_path / "out").glob("part-*"))
    summary = scan(DEMO, tmp_path / "out")
    assert summary.files_done_before == summary.files_listed and summary.files_ok == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*")) == before


def test_scan_manifest_carries_columns_and_reports_missing(tmp_path):
    man = tmp_path / "m.jsonl"
    lines = [json.loads(x) for x in (DEMO / "manifest.jsonl").read_text().splitlines()][:3]
    for rec in lines:
        rec["uri"] = str(DEMO / rec["uri"])
    lines.append({"uri": str(tmp_path / "missing.wav"), "text": "gone", "labels": "speech",
                  "language": "en"})  # fmt: skip
    man.write_text("\n".join(json.dumps(r) for r in lines))
    scan(man, tmp_path / "out")
    rows = rows_by_name(tmp_path / "out")
    assert len(rows) == 4
    gone = rows["missing.wav"]
    assert gone["status"] == "error" and gone["error_stage"] == "list"
    assert gone["error_kind"] == "not_found" and "does not exist" in gone["error"]
    ok = rows[Path(lines[0]["uri"]).name]
    assert ok["status"] == "ok" and dict(ok["meta"])["text"] == lines[0]["text"]


def test_scan_csv_and_parquet_manifests(tmp_path):
    import pyarrow as pa

    uris = [str(p) for p in sorted(DEMO.glob("s0*.wav"))]
    (tmp_path / "m.csv").write_text("uri,speaker\n" + "\n".join(f"{u},spk{i}" for i, u in
                                                               enumerate(uris)))  # fmt: skip
    pq.write_table(pa.table({"uri": uris}), tmp_path / "m.parquet")
    scan(tmp_path / "m.csv", tmp_path / "o1")
    scan(tmp_path / "m.parquet", tmp_path / "o2")
    r1, r2 = rows_by_name(tmp_path / "o1"), rows_by_name(tmp_path / "o2")
    assert sorted(r1) == sorted(r2) == sorted(Path(u).name for u in uris)
    assert {dict(r["meta"])["speaker"] for r in r1.values()} == {
        f"spk{i}" for i in range(len(uris))
    }
    assert r1["s01_fox.wav"]["audio_id"] == r2["s01_fox.wav"]["audio_id"]  # stable id


def _bad_corpus(d: Path) -> dict[str, tuple[str, str | None]]:
    """name → (expected status, expected error kind)."""
    d.mkdir()
    (d / "zero.wav").write_bytes(b"")
    (d / "random.mp3").write_bytes(np.random.default_rng(1).bytes(30000))
    mp3 = write(d / "half.mp3", tone(300, 44100, 4.0), 44100, "mp3")
    mp3.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    fl = write(d / "half.flac", tone(300, 16000, 4.0), 16000, "flac")
    fl.write_bytes(fl.read_bytes()[: fl.stat().st_size // 2])
    (d / "text.wav").write_text("not audio at all\n" * 40)
    w = write(d / "liar.wav", tone(300, 16000, 1.0), 16000, "wav16")
    data = bytearray(w.read_bytes())
    struct.pack_into("<I", data, data.index(b"data") + 4, 16000 * 2 * 10)
    w.write_bytes(bytes(data))
    write(d / "zero_samples.wav", np.zeros((1, 0), np.float32), 16000, "wav16")
    write(d / "one_sample.wav", np.full((1, 1), 0.1, np.float32), 16000, "wav16")
    x = tone(300, 16000, 1.0)
    x[0, 5] = np.nan
    x[0, 6] = np.inf
    write(d / "nan.wav", x, 16000, "wavf32")
    write(d / "eight.wav", tone(1000, 96000, 1.0, channels=8, amp=0.3), 96000, "wav24")
    shutil.copy(DEMO / "s01_fox.wav", d / "good.wav")
    return {
        "zero.wav": ("error", "empty_file"),
        "random.mp3": ("error", None),
        "half.mp3": ("error", "truncated"),
        "half.flac": ("error", "truncated"),
        "text.wav": ("error", "corrupt"),
        "liar.wav": ("error", "truncated"),
        "zero_samples.wav": ("error", "no_audio"),
        "one_sample.wav": ("ok", None),
        "nan.wav": ("error", "non_finite_samples"),
        "eight.wav": ("ok", None),
        "good.wav": ("ok", None),
    }


def test_every_bad_input_gives_exactly_one_row(tmp_path):
    expected = _bad_corpus(tmp_path / "bad")
    summary = scan(tmp_path / "bad", tmp_path / "out")
    rows = rows_by_name(tmp_path / "out")
    assert sorted(rows) == sorted(expected)
    for name, (status, kind) in expected.items():
        r = rows[name]
        assert r["status"] == status, (name, r["error"])
        if status == "error":
            assert r["error_stage"] in ("read", "decode") and r["error"], name
            assert name in r["error"] or r["uri"] in r["error"], r["error"]
            if kind:
                assert r["error_kind"] == kind, (name, r["error_kind"], r["error"])
    assert rows["eight.wav"]["source_channels"] == 8
    assert summary.files_error == sum(1 for s, _ in expected.values() if s == "error")


def test_unwritable_output_stops_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JobError, match="cannot be written"):
        scan(DEMO, blocker / "out")


def test_missing_source_stops_with_message(tmp_path):
    with pytest.raises(JobError, match="does not exist"):
        scan(tmp_path / "nothing-here", tmp_path / "out")


def test_scan_cli_prints_summary(tmp_path):
    res = CliRunner().invoke(app, ["scan", str(DEMO), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "files listed" in res.output and "14" in res.output
    bad = CliRunner().invoke(app, ["scan", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 1 and "does not exist" in bad.output


# ------------------------------------------------------------------------------ S3 ------
def test_scan_s3_prefix_with_permission_denied_object(s3_server, tmp_path):
    admin = s3_server.admin
    upload_demo(admin, "audio/scan", names=["s01_fox.wav", "s03_window.mp3", "s06_beach.m4a"])
    admin.pipe("locked/secret.wav", (DEMO / "s01_fox.wav").read_bytes())
    opts = s3_server.options(S3_READER)
    man = tmp_path / "m.jsonl"
    uris = [f"s3://audio/scan/{n}" for n in ("s01_fox.wav", "s03_window.mp3", "s06_beach.m4a")]
    man.write_text("\n".join(json.dumps({"uri": u}) for u in [*uris, "s3://locked/secret.wav"]))
    # prefix listing, output to S3
    scan("s3://audio/scan", "s3://out/scan1", storage_options=opts)
    rows = rows_by_name("s3://out/scan1", storage_options=opts)
    assert sorted(rows) == ["s01_fox.wav", "s03_window.mp3", "s06_beach.m4a"]
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["s01_fox.wav"]["uri"] == "s3://audio/scan/s01_fox.wav"
    # manifest naming an object the reader may not read → one permission_denied row
    scan(man, "s3://out/scan2", storage_options=opts)
    rows = rows_by_name("s3://out/scan2", storage_options=opts)
    assert len(rows) == 4
    assert rows["secret.wav"]["status"] == "error"
    assert rows["secret.wav"]["error_kind"] == "permission_denied", rows["secret.wav"]["error"]


def test_s3_unlistable_source_and_unwritable_output(s3_server, tmp_path):
    opts = s3_server.options(S3_READER)
    with pytest.raises(JobError, match="cannot be listed|does not exist"):
        scan("s3://locked/", tmp_path / "o", storage_options=opts)
    with pytest.raises(JobError, match="cannot be written"):
        scan(str(DEMO), "s3://locked/out", storage_options=opts)
    bad = {**opts, "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{s3_server.port + 1}"}}
    with pytest.raises(JobError):
        scan("s3://audio/", tmp_path / "o2", storage_options=bad)


def test_readers_of_a_folder_mid_job_see_committed_rows_only(tmp_path):
    """What a reader sees while a job runs: batches staged but not folded are invisible to
    pandas and Ray Data's own folder readers (as to DuckDB, Polars and pyarrow, tested with the
    sink), and after the fold every row is seen once."""
    import pandas as pd
    import ray

    from earmark.sink.commit import fold
    from earmark.sink.shards import stage_shard
    from output_rows import ok_rows

    folded = [stage_shard(ok_rows(ids), str(tmp_path))[0] for ids in (["a", "b"], ["c"])]
    fold(str(tmp_path), folded)
    stage_shard(ok_rows(["d", "e", "f"]), str(tmp_path))  # staged, not folded yet
    assert sorted(pd.read_parquet(tmp_path)["audio_id"]) == ["a", "b", "c"]
    rows = ray.data.read_parquet(str(tmp_path)).select_columns(["audio_id"]).take_all()
    assert sorted(r["audio_id"] for r in rows) == ["a", "b", "c"]
