"""Packed archives on a real local Ray: Hugging Face Parquet (the Audio struct) and WebDataset
tar shards, plain and gzip, local and on S3 — one row per member, metadata carried, stable ids,
and every hostile input an error row while the job goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from audio_factory import tone, write
from earmark.batch.runner import run_job
from earmark.contracts import JobSpec
from earmark.sink.shards import read_output
from earmark.storage import Location
from packed_factory import hf_parquet, meta_json, tar_shard
from servers import S3_READER

pytestmark = pytest.mark.usefixtures("ray_session")


def _clip(tmp: Path, name: str, seconds: float, fmt: str = "flac") -> bytes:
    return write(tmp / name, tone(440 + 40 * seconds, 16000, seconds), 16000, fmt).read_bytes()


def scan(source, out, **kw):
    return run_job(
        JobSpec(source=str(source), output=str(out), **kw), with_model=False, progress=False
    )


def _archive(tmp_path: Path) -> Path:
    work, src = tmp_path / "clips", tmp_path / "src"
    work.mkdir()
    src.mkdir()
    a, b, c = (_clip(work, f"{n}.flac", s) for n, s in (("a", 1.0), ("b", 2.0), ("c", 0.5)))
    wav = _clip(work, "w.wav", 1.5, "wav16")
    hf_parquet(
        src / "train-00000.parquet",
        [("a.flac", a), ("b.flac", b), ("gone.flac", None), ("w.wav", wav), ("c.flac", c)],
    )
    tar_shard(src / "shard-000.tar", [
        ("s0", {"flac": a, "json": meta_json(speaker="x", lang="en"), "txt": b"hello"}),
        ("s1", {"wav": wav}),
        ("s2", {"flac": b"this is text, not audio"}),  # a member with a wrong extension
        ("s3", {"flac": b"\0" * 300_000}),  # over the limit below
        ("s4", {"json": meta_json(only="meta")}),  # a sample without audio
    ])  # fmt: skip
    tar_shard(src / "shard-001.tar.gz", [("g0", {"flac": b}), ("g1", {"flac": c})], gz=True)
    whole = tar_shard(
        work / "cut.tar", [("t0", {"flac": a}), ("t1", {"flac": b}), ("t2", {"flac": c})]
    )
    data = whole.read_bytes()
    (src / "shard-002.tar").write_bytes(data[: len(data) * 2 // 3])  # truncated mid-member
    (src / "loose.flac").write_bytes(c)
    return src


def _by_key(out) -> dict[str, dict]:
    return {r["uri"].rsplit("/", 1)[1]: r for r in read_output(str(out)).to_pylist()}


def test_packed_parquet_and_tar_shards_one_row_per_member(tmp_path):
    src = _archive(tmp_path)
    limits = {"max_file_bytes": 200_000}
    summary = scan(src, tmp_path / "out", limits=limits)
    rows = _by_key(tmp_path / "out")
    pq_rows = {k: r for k, r in rows.items() if k.startswith("train-00000.parquet#")}
    assert sorted(pq_rows) == [f"train-00000.parquet#{i}" for i in range(5)]
    assert pq_rows["train-00000.parquet#1"]["duration_s"] == pytest.approx(2.0, abs=0.01)
    assert pq_rows["train-00000.parquet#3"]["codec"].startswith("pcm")
    assert pq_rows["train-00000.parquet#1"]["meta"] == [
        ("speaker", "spk1"),
        ("n", "1"),
        ("path", "b.flac"),
    ]
    gone = pq_rows["train-00000.parquet#2"]
    assert gone["status"] == "error" and gone["error_kind"] == "empty_file"
    assert "gone.flac" in gone["error"]
    # tar: metadata members become meta; hostile members are error rows
    s0 = rows["shard-000.tar#s0"]
    assert s0["status"] == "ok" and dict(s0["meta"]) == {
        "speaker": "x",
        "lang": "en",
        "txt": "hello",
    }
    assert rows["shard-000.tar#s1"]["duration_s"] == pytest.approx(1.5, abs=0.01)
    assert rows["shard-000.tar#s2"]["status"] == "error"
    assert rows["shard-000.tar#s2"]["error_stage"] == "decode"
    assert rows["shard-000.tar#s3"]["error_kind"] == "too_large"
    assert rows["shard-000.tar#s4"]["error_kind"] == "no_audio"
    assert rows["shard-001.tar.gz#g0"]["duration_s"] == pytest.approx(2.0, abs=0.01)
    assert rows["shard-001.tar.gz#g1"]["status"] == "ok"
    # the truncated shard: what came before the cut, then an error row where it broke
    cut = {k: r for k, r in rows.items() if k.startswith("shard-002.tar")}
    assert cut["shard-002.tar#t0"]["status"] == "ok"
    assert cut["shard-002.tar#t1"]["status"] == "ok"  # whole before the cut
    assert cut["shard-002.tar#t2"]["error_kind"] == "truncated" and len(cut) == 3
    assert rows["loose.flac"]["status"] == "ok"
    assert summary.files_ok + summary.files_error == len(rows) == summary.output_rows
    assert summary.files_listed == len(rows)
    # stable ids: a rerun finds every member done, tar members included
    again = scan(src, tmp_path / "out", limits=limits)
    assert again.files_ok + again.files_error == 0
    assert again.files_done_before == len(rows) == again.files_listed


def test_a_changed_shard_gets_new_member_rows_and_the_old_ones_go(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = _clip(tmp_path, "a.flac", 1.0)
    tar_shard(src / "s.tar", [("k0", {"flac": a}), ("k1", {"flac": a})])
    scan(src, tmp_path / "out")
    before = {r["uri"]: r["audio_id"] for r in read_output(str(tmp_path / "out")).to_pylist()}
    tar_shard(src / "s.tar", [("k0", {"flac": a}), ("k1", {"flac": a}), ("k2", {"flac": a})])
    summary = scan(src, tmp_path / "out")
    after = {r["uri"]: r["audio_id"] for r in read_output(str(tmp_path / "out")).to_pylist()}
    assert len(after) == 3 and summary.rows_superseded == 2
    assert not set(before.values()) & set(after.values())


def test_packed_shards_on_s3(tmp_path, s3_server):
    src = _archive(tmp_path)
    for p in src.iterdir():
        s3_server.admin.put(str(p), f"audio/packed/{p.name}")
    opts = s3_server.options(S3_READER)
    summary = scan("s3://audio/packed", "s3://out/packed", storage_options=opts)
    rows = {
        r["uri"].rsplit("/", 1)[1]: r
        for r in read_output(Location("s3://out/packed", opts)).to_pylist()
    }
    assert rows["train-00000.parquet#4"]["status"] == "ok"
    assert rows["shard-001.tar.gz#g0"]["duration_s"] == pytest.approx(2.0, abs=0.01)
    assert rows["shard-002.tar#t0"]["status"] == "ok"
    # 5 parquet rows, 5 tar samples, 2 gzip, t0 and t1 whole and t2 cut, one loose file
    assert summary.output_rows == len(rows) == 16
    assert rows["shard-002.tar#t2"]["error_kind"] == "truncated"


def test_a_packed_parquet_file_named_as_the_source_and_its_audio_column(tmp_path):
    a = _clip(tmp_path, "a.flac", 1.0)
    path = hf_parquet(tmp_path / "data.parquet", [("a.flac", a), ("b.flac", a)])
    summary = scan(path, tmp_path / "out", audio_column="audio")
    assert summary.files_ok == 2
    from earmark.contracts import JobError

    with pytest.raises(JobError, match="no_such"):
        scan(path, tmp_path / "o2", audio_column="no_such")
