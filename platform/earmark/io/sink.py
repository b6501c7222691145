"""The Parquet sink: deterministic shard names, atomic writes, resume, duplicate repair.

Exactly-once rests on three facts:
1. A shard's name is a hash of the sorted audio_ids it holds, so a task Ray retries rewrites the
   same name (an overwrite, not a second copy).
2. A shard appears whole or not at all: local files are written to a hidden temp name and renamed
   (atomic on POSIX); object stores publish an object only when its upload completes.
3. A rerun first reads the audio_ids already in the output and never schedules them again.
`repair_duplicates` checks the invariant at the end of every job and removes any duplicate row
(which (1)-(3) should make impossible) so the output holds one row per audio_id regardless.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from earmark.io.storage import get_fs, is_local
from earmark.schemas import OUTPUT_SCHEMA

SHARD_PREFIX = "part-"
TMP_PREFIX = ".tmp-"
SUMMARY_NAME = "_summary.json"  # leading underscore: Parquet readers skip it


def shard_name(audio_ids: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(audio_ids)).encode()).hexdigest()[:24]
    return f"{SHARD_PREFIX}{digest}.parquet"


def write_shard(table: pa.Table, output: str, storage_options: dict[str, Any] | None = None) -> str:
    """Write one shard atomically; returns its path. Same rows → same name."""
    table = table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)
    fs, root = get_fs(output, storage_options)
    name = shard_name(table.column("audio_id").to_pylist())
    final = posixpath.join(root.rstrip("/"), name)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    if is_local(fs):
        os.makedirs(root, exist_ok=True)
        tmp = os.path.join(root, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    else:
        fs.pipe_file(final, data)  # one PUT: the object appears only when complete
    return final


def list_shards(output: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    fs, root = get_fs(output, storage_options)
    if not fs.exists(root):
        return []
    fs.invalidate_cache(root)
    names = fs.ls(root, detail=False)
    return sorted(
        n
        for n in names
        if posixpath.basename(n).startswith(SHARD_PREFIX) and n.endswith(".parquet")
    )


def read_output(
    output: str, storage_options: dict[str, Any] | None = None, columns: list[str] | None = None
) -> pa.Table:
    """All rows of an output folder (empty table with the schema when there are none)."""
    fs, _ = get_fs(output, storage_options)
    shards = list_shards(output, storage_options)
    if not shards:
        schema = (
            OUTPUT_SCHEMA
            if columns is None
            else pa.schema([OUTPUT_SCHEMA.field(c) for c in columns])
        )
        return schema.empty_table()
    tables = []
    for s in shards:
        with fs.open(s, "rb") as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables)


def done_ids(output: str, storage_options: dict[str, Any] | None = None) -> set[str]:
    """audio_ids that already have a row: a rerun skips them."""
    return set(read_output(output, storage_options, ["audio_id"]).column("audio_id").to_pylist())


def clean_temp(output: str, storage_options: dict[str, Any] | None = None) -> int:
    """Remove temp files a killed run left behind (never complete shards)."""
    fs, root = get_fs(output, storage_options)
    if not is_local(fs) or not os.path.isdir(root):
        return 0
    stale = [n for n in os.listdir(root) if n.startswith(TMP_PREFIX)]
    for n in stale:
        os.unlink(os.path.join(root, n))
    return len(stale)


def repair_duplicates(output: str, storage_options: dict[str, Any] | None = None) -> int:
    """Enforce one row per audio_id across shards; returns how many duplicate rows were removed."""
    fs, _ = get_fs(output, storage_options)
    seen: set[str] = set()
    removed = 0
    for shard in list_shards(output, storage_options):
        with fs.open(shard, "rb") as f:
            ids = pq.read_table(f, columns=["audio_id"]).column("audio_id").to_pylist()
        dup = []
        for i, a in enumerate(ids):
            if a in seen:
                dup.append(i)
            seen.add(a)
        if not dup:
            continue
        with fs.open(shard, "rb") as f:
            table = pq.read_table(f)
        drop = set(dup)
        keep = [i for i in range(len(ids)) if i not in drop]
        removed += len(dup)
        fs.rm(shard)
        if keep:
            write_shard(table.take(keep), output, storage_options)
    return removed
