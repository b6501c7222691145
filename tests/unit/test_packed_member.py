"""One member of a packed shard by its `SHARD#KEY` uri (what Serve reads for a URL input): the
same bytes a job decodes, and every problem named with the shard and the key."""

from __future__ import annotations

import io

import pytest

from earmark.contracts import EarmarkError, ErrorKind
from earmark.source.member import is_packed_shard, read_member, split_member_uri
from packed_factory import hf_parquet, tar_shard

LIMIT = 1_000_000


def _read(path, key, limit=LIMIT, **kw):
    with open(path, "rb") as f:
        return read_member(f, str(path), key, max_bytes=limit, **kw)


@pytest.mark.parametrize(
    ("uri", "want"),
    [
        ("s3://b/shard-001.tar#0001", ("s3://b/shard-001.tar", "0001")),
        ("s3://b/s.tar.gz#a#b", None),  # the key is after the last '#': 's.tar.gz#a' is no shard
        ("/data/train-0.parquet#12", ("/data/train-0.parquet", "12")),
        ("s3://b/clip#1.wav", None),  # a '#' in an ordinary file name
        ("s3://b/s.tar#", None),
        ("s3://b/s.tar", None),
    ],
)
def test_member_uris(uri, want):
    assert split_member_uri(uri) == want


def test_packed_shard_suffixes():
    assert all(map(is_packed_shard, ["a.tar", "a.TAR.GZ", "a.tgz", "x/a.parquet"]))
    assert not any(map(is_packed_shard, ["a.wav", "a.tar.bz2", "a.jsonl", "a.parquet.bak"]))


def test_a_tar_sample_and_a_parquet_row(tmp_path):
    tar = tar_shard(tmp_path / "s.tar", [("k0", {"flac": b"zero"}), ("k1", {"flac": b"one"})])
    assert _read(tar, "k1") == b"one" and _read(tar, "k0") == b"zero"
    gz = tar_shard(tmp_path / "s.tar.gz", [("g0", {"wav": b"gz"})], gz=True)
    assert _read(gz, "g0") == b"gz"
    pq_path = hf_parquet(tmp_path / "d.parquet", [(f"{i}.flac", b"r%d" % i) for i in range(5)])
    # rows 0-1, 2-3, 4 in three row groups: the row is found in its own group
    assert [_read(pq_path, str(i)) for i in range(5)] == [b"r%d" % i for i in range(5)]


def test_every_problem_names_the_shard_and_the_key(tmp_path):
    tar = tar_shard(tmp_path / "s.tar", [("k0", {"flac": b"x" * 100}), ("k1", {"json": b"{}"})])
    with pytest.raises(EarmarkError, match=r"s\.tar holds no sample with the key 'nope'") as e:
        _read(tar, "nope")
    assert e.value.kind == ErrorKind.NOT_FOUND
    with pytest.raises(EarmarkError) as e:
        _read(tar, "k0", limit=10)
    assert e.value.kind == ErrorKind.TOO_LARGE and "k0" in e.value.message
    with pytest.raises(EarmarkError, match="k1") as e:  # a sample with no audio member
        _read(tar, "k1")
    pq_path = hf_parquet(tmp_path / "d.parquet", [("a.flac", b"a"), ("b.flac", None)])
    with pytest.raises(EarmarkError, match="has 2 rows; there is no row 7"):
        _read(pq_path, "7")
    with pytest.raises(EarmarkError, match="row number, got 'a.flac'"):
        _read(pq_path, "a.flac")
    with pytest.raises(EarmarkError, match="row 1.*is null") as e:
        _read(pq_path, "1")
    assert e.value.kind == ErrorKind.EMPTY_FILE


def test_a_cut_shard_says_the_member_was_not_reached(tmp_path):
    tar = tar_shard(tmp_path / "s.tar", [(f"k{i}", {"flac": b"z" * 4000}) for i in range(4)])
    cut = tmp_path / "cut.tar"
    cut.write_bytes(tar.read_bytes()[:7000])  # inside k1's data
    assert _read(cut, "k0") == b"z" * 4000
    with pytest.raises(EarmarkError, match=r"sample 'k3' of .*cut\.tar cannot be reached") as e:
        _read(cut, "k3")
    assert e.value.kind == ErrorKind.TRUNCATED


def test_a_parquet_manifest_is_not_a_shard(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"uri": ["a.wav"]}), path)
    with pytest.raises(EarmarkError, match="no audio column.*manifest of uris"):
        _read(path, "0")
    buf = io.BytesIO(path.read_bytes())  # any seekable file object will do
    with pytest.raises(EarmarkError, match="no audio column"):
        read_member(buf, "mem.parquet", "0", max_bytes=LIMIT)
