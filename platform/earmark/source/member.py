"""One member of a packed shard, named as a job's rows name it: `SHARD#KEY` (a tar sample's key,
or a Parquet row's index in the file). Serve takes one clip per request, so it reads one member
by that uri; a whole shard is many clips and belongs to a job."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from earmark.contracts import EarmarkError, ErrorKind, ErrorStage
from earmark.source.packed import (
    audio_column,
    is_tar_shard,
    iter_parquet_members,
    parquet_row_groups,
)
from earmark.source.tar import iter_tar_members


def is_packed_shard(path: str) -> bool:
    """A path a job reads member by member (a Parquet file may still turn out to be a manifest)."""
    return is_tar_shard(path) or path.lower().endswith(".parquet")


def split_member_uri(uri: str) -> tuple[str, str] | None:
    """(shard uri, key) of `SHARD#KEY`, or None when `uri` does not name a member of a shard."""
    shard, sep, key = uri.rpartition("#")
    if not sep or not key or not is_packed_shard(shard):
        return None
    return shard, key


def _missing(what: str) -> EarmarkError:
    return EarmarkError(ErrorStage.READ, ErrorKind.NOT_FOUND, what)


def _parquet_group(f: Any, shard: str, key: str) -> int:
    """The row group holding row `key` of the file."""
    if not key.isdigit():
        raise _missing(f"{shard}: a Parquet member is named by its row number, got {key!r}")
    row, start = int(key), 0
    for group, rows in parquet_row_groups(f):
        if row < start + rows:
            return group
        start += rows
    raise _missing(f"{shard} has {start} rows; there is no row {row}")


def read_member(
    f: Any, shard: str, key: str, *, max_bytes: int, audio_col: str | None = None
) -> bytes:
    """The audio bytes of member `key` of the shard open as `f` (seekable for Parquet; a tar is
    streamed up to the member). EarmarkError (stage READ) naming the shard and the key when the
    member is missing, empty, over `max_bytes` or damaged; a Parquet file without an audio
    column is a manifest of uris, not a shard."""
    if is_tar_shard(shard):
        members = iter_tar_members(f, max_bytes=max_bytes, what=shard)
    else:
        col = audio_column(pq.ParquetFile(f).schema_arrow, audio_col)
        if col is None:
            raise EarmarkError(
                ErrorStage.READ,
                ErrorKind.UNSUPPORTED_FORMAT,
                f"{shard} has no audio column (binary, or the datasets Audio struct): it is a "
                "manifest of uris, not a packed shard",
            )
        group = _parquet_group(f, shard, key)
        members = iter_parquet_members(f, col, row_groups=[group], max_bytes=max_bytes, what=shard)
    last = None
    for m in members:
        if m.key == key:
            if m.error is not None:
                raise m.error  # the member itself is empty, too large or damaged
            return m.data
        last = m
    if last is not None and last.damage:  # the shard broke before the member
        msg = f"sample {key!r} of {shard} cannot be reached: {last.error.message}"
        raise EarmarkError(ErrorStage.READ, last.error.kind, msg)
    raise _missing(f"{shard} holds no sample with the key {key!r}")
