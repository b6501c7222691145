"""Packed archives read member by member: Parquet files with a Hugging Face `Audio` struct or a
plain binary column, and WebDataset tar shards (plain and gzip), built with the real writers
(pyarrow, tarfile) around real encoded audio, plus the hostile cases: cut shards, a member over
the byte limit, a sample without audio, a wrong extension, a stream that cannot seek, a storage
error in the middle of a read."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audio_factory import tone, write
from earmark.audio.decode import decode_audio
from earmark.contracts import EarmarkError, ErrorKind, ErrorStage
from earmark.source.packed import (
    Member,
    audio_column,
    is_tar_shard,
    iter_parquet_members,
    parquet_row_groups,
)
from earmark.source.tar import iter_tar_members, split_member_name

HF_AUDIO = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
LIMIT = 1 << 20


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Real encoded audio: {name: (bytes, seconds)}."""
    d = tmp_path_factory.mktemp("clips")
    out = {}
    for name, fmt, seconds in [("a.flac", "flac", 0.5), ("b.wav", "wav16", 0.75)]:
        path = write(d / name, tone(440, 16000, seconds), 16000, fmt)
        out[name] = (path.read_bytes(), seconds)
    return out


def decoded_seconds(m: Member) -> float:
    return decode_audio(io.BytesIO(m.data), what=m.key, max_duration_s=60).duration_s


def kinds(members: list[Member]) -> list[tuple[str, ErrorKind | None]]:
    return [(m.key, m.error.kind if m.error else None) for m in members]


# ---- Parquet --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_parquet(clips):
    """8 rows in row groups of 3, 3 and 2: an HF Audio struct, a null struct (row 2), a struct
    with only a path (row 5), text, int and nested columns with a null."""
    flac, wav = clips["a.flac"][0], clips["b.wav"][0]
    audio = [
        {"bytes": flac if i % 2 == 0 else wav, "path": f"clip{i}.{'flac' if i % 2 == 0 else 'wav'}"}
        for i in range(8)
    ]
    audio[2] = None
    audio[5] = {"bytes": None, "path": "elsewhere/clip5.wav"}
    table = pa.table(
        {
            "text": [f"sentence {i}" for i in range(8)],
            "audio": pa.array(audio, HF_AUDIO),
            "speaker": [i * 10 for i in range(7)] + [None],
            "tags": [["x", str(i)] for i in range(8)],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=3)
    return buf.getvalue()


def read_parquet(raw: bytes, col: str, **kw) -> list[Member]:
    kw.setdefault("max_bytes", LIMIT)
    return list(iter_parquet_members(io.BytesIO(raw), col, what="s.parquet", **kw))


def test_audio_column_finds_the_hf_struct_a_binary_audio_column_or_none():
    hf = pa.schema([("uri", pa.string()), ("clip", HF_AUDIO)])
    bytes_only = pa.schema([("clip", pa.struct([("bytes", pa.large_binary())]))])
    plain = pa.schema([("id", pa.int64()), ("audio", pa.large_binary())])
    manifest = pa.schema([("uri", pa.string()), ("speaker", pa.string())])
    assert audio_column(hf) == "clip" and audio_column(bytes_only) == "clip"
    assert audio_column(plain) == "audio"
    assert audio_column(manifest) is None
    assert audio_column(pa.schema([("audio", pa.string())])) is None  # text, not bytes
    assert audio_column(plain, "audio") == "audio"
    with pytest.raises(ValueError, match=r"'wave' is not in the file \(columns: id, audio\)"):
        audio_column(plain, "wave")
    with pytest.raises(ValueError, match=r"'uri' is string, not binary.*columns: uri, clip"):
        audio_column(hf, "uri")


def test_row_groups_come_from_the_footer(hf_parquet):
    assert parquet_row_groups(io.BytesIO(hf_parquet)) == [(0, 3), (1, 3), (2, 2)]
    schema = pq.ParquetFile(io.BytesIO(hf_parquet)).schema_arrow
    assert audio_column(schema) == "audio"


def test_hf_struct_rows_keys_meta_and_null_audio(hf_parquet, clips):
    members = read_parquet(hf_parquet, "audio")
    assert [m.key for m in members] == [str(i) for i in range(8)]  # across all row groups
    assert kinds(members)[2] == ("2", ErrorKind.EMPTY_FILE)
    assert kinds(members)[5] == ("5", ErrorKind.EMPTY_FILE)
    good = [m for m in members if m.error is None]
    assert [m.key for m in good] == ["0", "1", "3", "4", "6", "7"]
    first = members[0]
    assert first.data == clips["a.flac"][0] and first.size == len(first.data)
    assert first.meta == {
        "text": "sentence 0",
        "speaker": "0",
        "tags": '["x", "0"]',
        "path": "clip0.flac",
    }
    assert "speaker" not in members[7].meta  # a null is no entry
    null, path_only = members[2], members[5]
    assert null.data is None and null.error.stage == ErrorStage.READ
    assert "s.parquet" in null.error.message and "row 2" in null.error.message
    assert "'audio' is null" in null.error.message
    assert "elsewhere/clip5.wav" in path_only.error.message
    assert path_only.meta["path"] == "elsewhere/clip5.wav" and path_only.meta["text"]
    assert decoded_seconds(members[0]) == pytest.approx(clips["a.flac"][1], abs=0.05)
    assert decoded_seconds(members[3]) == pytest.approx(clips["b.wav"][1], abs=0.05)


def test_chosen_row_groups_keep_absolute_row_indexes(hf_parquet):
    assert [m.key for m in read_parquet(hf_parquet, "audio", row_groups=[1])] == ["3", "4", "5"]
    assert [m.key for m in read_parquet(hf_parquet, "audio", row_groups=[2, 0])] == [
        "6",
        "7",
        "0",
        "1",
        "2",
    ]


def test_plain_binary_column_too_large_and_a_path_column_wins(clips):
    flac, wav = clips["a.flac"][0], clips["b.wav"][0]
    table = pa.table(
        {
            "audio": pa.array([flac, wav, None, flac, b""], pa.large_binary()),
            "path": ["p0", "p1", "p2", None, "p4"],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)
    assert len(flac) < len(wav)
    limit = (len(flac) + len(wav)) // 2
    members = read_parquet(buf.getvalue(), "audio", max_bytes=limit)
    assert kinds(members) == [
        ("0", None),
        ("1", ErrorKind.TOO_LARGE),
        ("2", ErrorKind.EMPTY_FILE),
        ("3", None),
        ("4", ErrorKind.EMPTY_FILE),
    ]
    by_key = {m.key: m for m in members}
    too_large = by_key["1"]
    assert too_large.data is None and too_large.size == len(wav)
    assert f"{limit} byte limit" in too_large.error.message
    assert by_key["0"].data == flac and by_key["0"].meta == {"path": "p0"}
    assert by_key["4"].error.kind == ErrorKind.EMPTY_FILE and "0 bytes" in by_key["4"].error.message
    assert by_key["3"].meta == {}  # the path column is null: nothing, and no struct to fall back on


def test_struct_path_is_not_meta_when_a_path_column_exists(clips):
    table = pa.table(
        {
            "path": ["column-path"],
            "audio": pa.array([{"bytes": clips["a.flac"][0], "path": "struct-path"}], HF_AUDIO),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    (m,) = read_parquet(buf.getvalue(), "audio")
    assert m.error is None and m.meta == {"path": "column-path"}


def test_a_damaged_row_group_is_error_rows_and_the_others_still_read(hf_parquet):
    md = pq.ParquetFile(io.BytesIO(hf_parquet)).metadata
    group = md.row_group(1)
    (chunk,) = [
        group.column(i)
        for i in range(group.num_columns)
        if group.column(i).path_in_schema == "audio.bytes"
    ]
    bad = bytearray(hf_parquet)
    start = chunk.data_page_offset
    bad[start : start + 64] = b"\xff" * 64  # the page header is garbage
    members = read_parquet(bytes(bad), "audio")
    assert [m.key for m in members] == [str(i) for i in range(8)]
    for m in members[3:6]:
        assert m.error.kind == ErrorKind.CORRUPT and "row group 1" in m.error.message
    assert [m.error is None for m in members[:3] + members[6:]] == [True, True, False, True, True]


class FailingFile(io.RawIOBase):
    """A file whose reads fail with a storage error once `broken` is set."""

    def __init__(self, raw: bytes, seekable: bool = True):
        self._b, self._seekable, self.broken = io.BytesIO(raw), seekable, False

    def readable(self):
        return True

    def seekable(self):
        return self._seekable

    def seek(self, *args):
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        return self._b.seek(*args)

    def tell(self):
        if not self._seekable:
            raise io.UnsupportedOperation("tell")
        return self._b.tell()

    def read(self, n=-1):
        if self.broken:
            raise ConnectionResetError("connection reset by peer")
        return self._b.read(n)


def test_a_storage_error_reading_parquet_propagates(hf_parquet):
    f = FailingFile(hf_parquet)
    members = iter_parquet_members(f, "audio", max_bytes=LIMIT, what="s.parquet")
    assert next(members).key == "0"  # the footer and row group 0 are read
    f.broken = True
    with pytest.raises(ConnectionResetError):  # not an error member: the caller may retry
        list(members)


# ---- tar shards -----------------------------------------------------------------------------


def make_tar(members: list[tuple[str, bytes]], gz: bool = False, extras: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        if extras:  # a folder and a link: not regular, ignored
            d = tarfile.TarInfo("shard")
            d.type = tarfile.DIRTYPE
            tf.addfile(d)
            link = tarfile.TarInfo("shard/link.flac")
            link.type, link.linkname = tarfile.SYMTYPE, "shard/0001.flac"
            tf.addfile(link)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_tar(raw: bytes, **kw) -> list[Member]:
    kw.setdefault("max_bytes", LIMIT)
    return list(iter_tar_members(io.BytesIO(raw), what="s.tar", **kw))


def shard_members(clips) -> list[tuple[str, bytes]]:
    flac, wav = clips["a.flac"][0], clips["b.wav"][0]
    meta = {"speaker": "ann", "n": 3, "nested": {"a": [1]}, "gone": None}
    return [
        ("shard/0001.flac", flac),
        ("shard/0001.json", json.dumps(meta).encode()),
        ("shard/0001.txt", "hello wörld".encode()),
        ("shard/0002.wav", wav),
        ("shard/0002.cls", b"7"),
        ("shard/0002.seg.json", b'{"not": "merged"}'),
        ("0003.flac", b"this is text, not audio"),  # a wrong extension: read, decode fails
        ("0004.txt", b"alone"),
        ("0004.json", b"{}"),
        ("0005.speech.flac", flac),
    ]


def check_shard(members: list[Member], clips) -> None:
    assert kinds(members) == [
        ("shard/0001", None),
        ("shard/0002", None),
        ("0003", None),
        ("0004", ErrorKind.NO_AUDIO),
        ("0005", None),
    ]
    one, two, wrong, no_audio, five = members
    assert one.meta == {"speaker": "ann", "n": "3", "nested": '{"a": [1]}', "txt": "hello wörld"}
    assert one.data == clips["a.flac"][0] and one.size == len(one.data)
    assert two.meta == {"cls": "7", "seg.json": '{"not": "merged"}'}
    assert decoded_seconds(one) == pytest.approx(clips["a.flac"][1], abs=0.05)
    assert decoded_seconds(two) == pytest.approx(clips["b.wav"][1], abs=0.05)
    assert decoded_seconds(five) == pytest.approx(clips["a.flac"][1], abs=0.05)
    assert wrong.data == b"this is text, not audio"
    with pytest.raises(EarmarkError):
        decode_audio(io.BytesIO(wrong.data), what="0003.flac", max_duration_s=60)
    assert no_audio.data is None and no_audio.error.stage == ErrorStage.READ
    assert "s.tar" in no_audio.error.message and "'0004'" in no_audio.error.message
    assert "0004.txt, 0004.json" in no_audio.error.message


def test_names_split_into_key_and_extension():
    assert split_member_name("dir/0001.flac") == ("dir/0001", "flac")
    assert split_member_name("0001.seg.json") == ("0001", "seg.json")
    assert split_member_name("a.b/c.d.e") == ("a.b/c", "d.e")
    assert split_member_name("README") == ("README", "")
    assert is_tar_shard("s3://b/x/000.TAR") and is_tar_shard("a.tar.gz") and is_tar_shard("a.tgz")
    assert not is_tar_shard("a.parquet") and not is_tar_shard("a.tar.zst")


@pytest.mark.parametrize("gz", [False, True])
def test_plain_and_gzip_shards_give_samples_in_order(clips, gz):
    raw = make_tar(shard_members(clips), gz=gz)
    assert raw[:2] == (b"\x1f\x8b" if gz else raw[:2])
    check_shard(read_tar(raw), clips)


@pytest.mark.parametrize("gz", [False, True])
def test_a_stream_that_cannot_seek(clips, gz):
    raw = make_tar(shard_members(clips), gz=gz)
    f = FailingFile(raw, seekable=False)
    check_shard(list(iter_tar_members(f, max_bytes=LIMIT, what="s.tar")), clips)


def test_two_audio_members_keep_the_first_bad_json_and_binary_side_members(clips):
    flac, wav = clips["a.flac"][0], clips["b.wav"][0]
    raw = make_tar(
        [
            ("a.flac", flac),
            ("a.mp3", b"never read"),
            ("a.alt.wav", wav),
            ("a.npy", b"\x93NUMPY\xff\xfe"),
            ("b.wav", wav),
            ("b.json", b"{not json"),
            ("c.wav", wav),
            ("c.json", b"[1, 2]"),
            ("d.wav", b""),
        ],
        extras=False,
    )
    a, b, c, d = read_tar(raw)
    assert a.error is None and a.data == flac
    assert a.meta == {"other_audio": "a.mp3,a.alt.wav", "not_text": "a.npy"}
    assert b.error.kind == ErrorKind.CORRUPT and "b.json is not valid JSON" in b.error.message
    assert c.error.kind == ErrorKind.CORRUPT and "JSON list, not an object" in c.error.message
    assert d.error.kind == ErrorKind.EMPTY_FILE and d.size == 0


def test_a_key_that_comes_back_later_is_an_error(clips):
    flac = clips["a.flac"][0]
    raw = make_tar([("a.flac", flac), ("b.flac", flac), ("a.json", b"{}")], extras=False)
    assert kinds(read_tar(raw)) == [("a", None), ("b", None), ("a", ErrorKind.CORRUPT)]


def test_a_member_over_the_limit_is_never_read(tmp_path, clips):
    flac = clips["a.flac"][0]
    big = 8 << 20
    raw = make_tar(
        [("0.flac", flac), ("1.wav", bytes(big)), ("1.json", b'{"k": "v"}'), ("2.flac", flac)],
        extras=False,
    )
    path = tmp_path / "big.tar"
    path.write_bytes(raw)
    del raw
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            members = list(iter_tar_members(f, max_bytes=1 << 20, what="big.tar"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < big // 4  # the 8 MiB member was skipped over, never held
    assert kinds(members) == [("0", None), ("1", ErrorKind.TOO_LARGE), ("2", None)]
    over = members[1]
    assert over.data is None and over.size == big and over.meta == {"k": "v"}
    assert "1.wav (8388608 bytes)" in over.error.message and "big.tar" in over.error.message


def offsets(raw: bytes) -> dict[str, tuple[int, int]]:
    """name → (header offset, data offset) in a plain tar."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        return {m.name: (m.offset, m.offset_data) for m in tf.getmembers()}


def test_a_truncated_tar_keeps_the_complete_samples_before_the_cut(clips):
    raw = make_tar(shard_members(clips))
    at = offsets(raw)
    mid_member = at["shard/0002.wav"][1] + 100
    members = read_tar(raw[:mid_member])
    assert kinds(members) == [("shard/0001", None), ("shard/0002", ErrorKind.TRUNCATED)]
    assert members[0].meta["txt"] == "hello wörld"
    msg = members[1].error.message
    assert "s.tar" in msg and "'shard/0002'" in msg and "after 1 complete sample" in msg
    # cut inside a header, and cut exactly between members (no end-of-archive block): the
    # sample open at the cut may be missing members, so it is the error
    for cut in (at["0003.flac"][0] + 200, at["0003.flac"][0]):
        assert kinds(read_tar(raw[:cut])) == [
            ("shard/0001", None),
            ("shard/0002", ErrorKind.TRUNCATED),
        ]
    # a member over the limit that is cut short: skipped over, then the end comes too early
    assert kinds(read_tar(raw[:mid_member], max_bytes=1000))[-1] == (
        "shard/0002",
        ErrorKind.TRUNCATED,
    )


def test_a_gzip_shard_cut_short(clips):
    full = make_tar(shard_members(clips))
    expected = [m.key for m in read_tar(full)]
    raw = gzip.compress(full)
    members = read_tar(raw[: len(raw) // 2])
    *good, last = members
    assert last.error.kind == ErrorKind.TRUNCATED and last.data is None
    assert [m.key for m in good] + [last.key] == expected[: len(members)]
    assert all(m.error is None for m in good) and len(good) >= 1
    assert f"after {len(good)} complete sample" in last.error.message


def test_garbage_empty_and_garbled_shards(clips):
    (broken,) = read_tar(b"\x00garbage" * 200)
    assert broken.key == "" and broken.error.kind == ErrorKind.CORRUPT
    assert "s.tar is not a readable tar shard" in broken.error.message
    (empty,) = read_tar(b"")
    assert empty.key == "" and empty.error.kind == ErrorKind.EMPTY_FILE
    raw = bytearray(make_tar(shard_members(clips)))
    at = offsets(bytes(raw))["0003.flac"][0]
    raw[at : at + 512] = b"\x7f" * 512  # a header that is not one
    members = read_tar(bytes(raw))
    assert kinds(members) == [("shard/0001", None), ("shard/0002", ErrorKind.CORRUPT)]
    corrupt_gz = bytearray(gzip.compress(make_tar(shard_members(clips))))
    corrupt_gz[len(corrupt_gz) // 3 : len(corrupt_gz) // 3 + 64] = b"\x00" * 64
    assert read_tar(bytes(corrupt_gz))[-1].error.kind in (ErrorKind.CORRUPT, ErrorKind.TRUNCATED)


def test_an_empty_tar_has_no_samples():
    assert read_tar(make_tar([], extras=False)) == []


def test_a_storage_error_reading_a_shard_propagates(clips):
    raw = make_tar(shard_members(clips))
    f = FailingFile(raw, seekable=False)
    members = iter_tar_members(f, max_bytes=LIMIT, what="s.tar")
    assert next(members).key == "shard/0001"
    f.broken = True
    with pytest.raises(ConnectionResetError):  # not an error member: the caller may retry
        list(members)
