"""Packed audio archives read member by member, streaming: Parquet files with an audio column
(the Hugging Face `Audio` struct or plain binary) here, WebDataset tar shards (plain or gzip)
in earmark.source.tar.
What the bytes say becomes a `Member` (an error member when unusable); an exception raised by the
file object itself (a storage error) propagates unchanged, for the caller to retry or classify
(`storage.classify_os_error`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from earmark.contracts import EarmarkError, ErrorKind, ErrorStage
from earmark.source.listing import meta_value

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


def error_member(key: str, kind: ErrorKind, message: str, meta=None, size=None) -> Member:
    return Member(key, None, meta or {}, EarmarkError(ErrorStage.READ, kind, message), size)


class Watched:
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
    watched = Watched(f)
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
                yield error_member(key, ErrorKind.EMPTY_FILE, f"{where} is null{shown}", meta)
            elif length == 0:
                msg = f"{where} is empty (0 bytes)"
                yield error_member(key, ErrorKind.EMPTY_FILE, msg, meta, 0)
            elif length > max_bytes:
                msg = f"{where} holds {length} bytes, over the {max_bytes} byte limit"
                yield error_member(key, ErrorKind.TOO_LARGE, msg, meta, length)
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
                yield error_member(str(row), ErrorKind.CORRUPT, msg)
