"""Packed audio archives read member by member, streaming: Parquet files with an audio column
(the Hugging Face `Audio` struct or plain binary) and WebDataset tar shards (plain or gzip).
What the bytes say becomes a `Member` (an error member when unusable); an exception raised by the
file object itself (a storage error) propagates unchanged, for the caller to retry or classify
(`storage.classify_os_error`)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import accumulate
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from earmark.contracts import EarmarkError, ErrorKind, ErrorStage
from earmark.source.listing import AUDIO_EXTENSIONS, meta_value

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
BATCH_ROWS = 64  # Parquet rows converted at a time within a row group


def is_tar_shard(path: str) -> bool:
    return path.lower().endswith(TAR_SUFFIXES)


@dataclass
class Member:
    key: str  # parquet: the row's index in the file (decimal); tar: the WebDataset key
    data: bytes | None  # the audio bytes; None when `error` is set
    meta: dict[str, str] = field(default_factory=dict)  # carried metadata; nulls left out
    error: EarmarkError | None = None  # stage READ; the message names the shard and the key
    size: int | None = None  # bytes of the audio member, None when unknown
    damage: bool = False  # the shard broke here: nothing after this member could be read


def _error(key: str, kind: ErrorKind, message: str, meta=None, size=None) -> Member:
    return Member(key, None, meta or {}, EarmarkError(ErrorStage.READ, kind, message), size)


class _Watched:
    """The file as the parsers see it: remembers an exception its own `read` raised (a storage
    error, to re-raise) as apart from a parser's complaint about the bytes."""

    def __init__(self, f: IO[bytes]):
        self._f, self.failure, self.bytes_read = f, None, 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._f.read(n)
        except BaseException as exc:
            self.failure = exc
            raise
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name: str) -> Any:  # seek, tell, closed...
        return getattr(self._f, name)


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _is_hf_audio(t: pa.DataType) -> bool:
    """The Hugging Face `Audio` feature as stored: struct<bytes: binary, path: string>."""
    if not pa.types.is_struct(t) or t.get_field_index("bytes") < 0:
        return False
    path = t.get_field_index("path")
    ok_path = path < 0 or str(t.field(path).type) in ("string", "large_string")
    return _is_binary(t.field("bytes").type) and ok_path


def audio_column(schema: pa.Schema, requested: str | None = None) -> str | None:
    """The audio column of a Parquet schema: `requested` when given (ValueError naming the columns
    when it is absent or not binary/HF-struct), else the first HF-struct column, else a binary
    column named `audio`; None when there is none (the file is then a manifest, not packed)."""
    names = ", ".join(schema.names)
    if requested is not None:
        if requested not in schema.names:
            raise ValueError(f"audio column {requested!r} is not in the file (columns: {names})")
        t = schema.field(requested).type
        if not (_is_binary(t) or _is_hf_audio(t)):
            raise ValueError(
                f"audio column {requested!r} is {t}, not binary nor a struct with a binary "
                f"'bytes' field (columns: {names})"
            )
        return requested
    for f in schema:
        if _is_hf_audio(f.type):
            return f.name
    if "audio" in schema.names and _is_binary(schema.field("audio").type):
        return "audio"
    return None


def parquet_row_groups(f: Any) -> list[tuple[int, int]]:
    """(row group index, rows) of a Parquet file, read from its footer only."""
    md = pq.ParquetFile(f).metadata
    return [(i, md.row_group(i).num_rows) for i in range(md.num_row_groups)]


def iter_parquet_members(
    f: Any, audio_col: str, *, row_groups: list[int] | None = None, max_bytes: int, what: str
) -> Iterator[Member]:
    """Rows of the given row groups (all when None) as Members in file order, one row group at a
    time in batches of BATCH_ROWS rows. Key = absolute row index in the file; the other columns
    are meta (the HF struct's `path` as meta['path'] unless a `path` column exists). A row group
    that cannot be read gives a CORRUPT error member for each of its rows not yet yielded."""
    watched = _Watched(f)
    pf = pq.ParquetFile(watched)  # a bad footer raises: the file as a whole cannot be read
    md, schema = pf.metadata, pf.schema_arrow
    starts = [0, *accumulate(md.row_group(i).num_rows for i in range(md.num_row_groups))]
    is_struct = pa.types.is_struct(schema.field(audio_col).type)
    path_col = "path" in schema.names

    def rows(batch: pa.RecordBatch, first: int) -> Iterator[Member]:
        col = batch.column(audio_col)
        paths = [None] * batch.num_rows
        if is_struct:  # flatten() applies the struct's own nulls to its fields
            parts = dict(zip((f.name for f in col.type), col.flatten(), strict=True))
            col = parts["bytes"]
            if "path" in parts:
                paths = parts["path"].to_pylist()
        others = {n: batch.column(n).to_pylist() for n in batch.schema.names if n != audio_col}
        for i, length in enumerate(pc.binary_length(col).to_pylist()):
            key = str(first + i)
            meta = {n: meta_value(v[i]) for n, v in others.items() if v[i] is not None}
            if paths[i] is not None and not path_col:
                meta["path"] = paths[i]
            where = f"{what}: row {key}: the audio column {audio_col!r}"
            if length is None:
                shown = f" (path {paths[i]!r} only)" if paths[i] is not None else ""
                yield _error(key, ErrorKind.EMPTY_FILE, f"{where} is null{shown}", meta)
            elif length == 0:
                yield _error(key, ErrorKind.EMPTY_FILE, f"{where} is empty (0 bytes)", meta, 0)
            elif length > max_bytes:
                msg = f"{where} holds {length} bytes, over the {max_bytes} byte limit"
                yield _error(key, ErrorKind.TOO_LARGE, msg, meta, length)
            else:
                yield Member(key, col[i].as_py(), meta, None, length)

    for g in range(md.num_row_groups) if row_groups is None else row_groups:
        first, end = starts[g], starts[g + 1]
        try:  # rows() converts a whole batch before it yields: a failure repeats no row
            for batch in pf.iter_batches(BATCH_ROWS, row_groups=[g], use_threads=False):
                yield from rows(batch, first)
                first += batch.num_rows
        except Exception as exc:
            if watched.failure is not None:
                raise
            for row in range(first, end):
                msg = f"{what}: row {row} (row group {g}) cannot be read: {exc}"
                yield _error(str(row), ErrorKind.CORRUPT, msg)


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset key and extension: up to / after the first dot of the basename."""
    dot = name.find(".", name.rfind("/") + 1)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


def _is_audio(ext: str) -> bool:
    return ext.rpartition(".")[2].lower() in AUDIO_EXTENSIONS


class _Sample:
    """The members of one key, gathered as they stream by."""

    def __init__(self, key: str, repeated: bool):
        self.key, self.repeated = key, repeated
        self.names, self.other_audio, self.too_large, self.not_text = [], [], [], []
        self.audio = self.data = self.size = self.bad_json = None  # audio: the member's name
        self.json_meta, self.text_meta = {}, {}

    def wants(self, name: str, ext: str, size: int, max_bytes: int) -> bool:
        """Note a member; True when its bytes are to be read."""
        self.names.append(name)
        if _is_audio(ext):
            # A second audio member is most often another encoding of the same clip (flac + mp3):
            # keep the first, name the others (never read) in meta['other_audio'], no error.
            if self.audio is not None:
                self.other_audio.append(name)
                return False
            self.audio, self.size = name, size
        if size > max_bytes:
            self.too_large.append(f"{name} ({size} bytes)")
            return False
        return bool(ext)  # a member without an extension has no meta key to go under

    def add(self, name: str, ext: str, data: bytes) -> None:
        if _is_audio(ext):
            self.data = data
        elif ext.lower() == "json":  # only `key.json` is merged key by key; `key.x.json` is text
            try:
                obj = json.loads(data)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                self.bad_json = f"{name} is not valid JSON ({exc})"
                return
            if not isinstance(obj, dict):
                self.bad_json = f"{name} holds a JSON {type(obj).__name__}, not an object"
                return
            self.json_meta = {k: meta_value(v) for k, v in obj.items() if v is not None}
        else:
            try:
                self.text_meta[ext] = data.decode("utf-8")
            except UnicodeDecodeError:  # binary side members (.npy, .jpg) are not carried
                self.not_text.append(name)

    def member(self, what: str, max_bytes: int) -> Member:
        meta = {**self.json_meta, **self.text_meta}  # a member file wins over a JSON key
        if self.other_audio:
            meta["other_audio"] = ",".join(self.other_audio)
        if self.not_text:
            meta["not_text"] = ",".join(self.not_text)
        where, key = f"{what}: sample {self.key!r}", self.key
        if self.repeated:
            msg = f"{where} appears again after other samples (members of a sample must be "
            return _error(key, ErrorKind.CORRUPT, msg + f"adjacent): {', '.join(self.names)}")
        if self.audio is None:
            msg = f"{where} has no audio member (members: {', '.join(self.names)})"
            return _error(key, ErrorKind.NO_AUDIO, msg, meta)
        if self.too_large:
            msg = f"{where}: {', '.join(self.too_large)} over the {max_bytes} byte limit, not read"
            return _error(key, ErrorKind.TOO_LARGE, msg, meta, self.size)
        if self.bad_json is not None:
            return _error(key, ErrorKind.CORRUPT, f"{where}: {self.bad_json}", meta, self.size)
        if not self.data:
            msg = f"{where}: the audio member {self.audio} is empty (0 bytes)"
            return _error(key, ErrorKind.EMPTY_FILE, msg, meta, 0)
        return Member(key, self.data, meta, None, self.size)


def _damage_kind(exc: BaseException) -> ErrorKind:
    cut = isinstance(exc, tarfile.EmptyHeaderError | tarfile.TruncatedHeaderError)  # no header
    return ErrorKind.TRUNCATED if cut or "unexpected end" in str(exc) else ErrorKind.CORRUPT


def iter_tar_members(f: Any, *, max_bytes: int, what: str) -> Iterator[Member]:
    """Samples of a tar shard (plain or gzip, from the bytes; a stream: `f` need not seek) in order.
    A damaged shard yields the complete samples read before the damage, then one error member
    keyed by the sample open when it broke ('' when none), which may lack members. A shard must
    end with the tar end-of-archive block: a stream that just stops is TRUNCATED."""
    watched = _Watched(f)
    stops: list[Exception] = []  # why tarfile stopped reading headers (it ends silently)

    class _Info(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
            try:
                return super().fromtarfile(tf)
            except tarfile.HeaderError as exc:
                stops.append(exc)
                raise

    try:
        tf = tarfile.open(fileobj=watched, mode="r|*", tarinfo=_Info)
    except Exception as exc:
        if watched.failure is not None:
            raise
        kind = _damage_kind(stops[-1] if stops else exc)
        kind = ErrorKind.EMPTY_FILE if watched.bytes_read == 0 else kind
        msg = f"{what} is not a readable tar shard ({type(exc).__name__}: {exc})"
        yield replace(_error("", kind, msg), damage=True)
        return
    sample: _Sample | None = None
    seen: set[str] = set()
    done = 0
    broken: BaseException | None = None
    with tf:  # closes tarfile's stream, never `f`
        try:
            while (ti := tf.next()) is not None:
                tf.members.clear()  # a stream has no use for the members it passed
                if not ti.isreg():
                    continue
                key, ext = split_member_name(ti.name)
                if sample is None or key != sample.key:
                    if sample is not None:
                        yield sample.member(what, max_bytes)
                        done += 1
                    sample = _Sample(key, key in seen)
                    seen.add(key)
                if sample.wants(ti.name, ext, ti.size, max_bytes):
                    sample.add(ti.name, ext, tf.extractfile(ti).read(ti.size))
        except Exception as exc:  # what tarfile, gzip or zlib say of the bytes
            broken = exc
    if broken is None and stops and not isinstance(stops[-1], tarfile.EOFHeaderError):
        broken = stops[-1]  # tarfile takes a cut or garbled header for the end of the archive
    if broken is None:
        if sample is not None:
            yield sample.member(what, max_bytes)
        return
    if watched.failure is not None:
        raise broken
    key = sample.key if sample is not None else ""
    msg = f"{what} is cut or damaged at sample {key!r}, after {done} complete sample(s) and "
    msg += f"{watched.bytes_read} bytes of the shard ({type(broken).__name__}: {broken})"
    yield replace(_error(key, _damage_kind(broken), msg), damage=True)
