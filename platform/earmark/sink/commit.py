"""Folding staged batches (or an older output's small files) into right-sized parts, exactly once.

One fold, in this order, each step durable before the next:
  1. journal  `_commits/<part>.json`: the part's name and its source files (written atomically)
  2. the part: rows of every source (less the rows `drop` names), streamed into one Parquet file
     (local: temp file, fsync, rename; object store: one upload that appears only when complete)
  3. each source deleted
  4. the journal deleted
`recover` finishes or undoes what a killed fold left, from its journal alone: the part exists →
the remaining sources go (their rows are in it); the part does not exist → only the journal goes
(the sources still hold every row). So after any kill and the next `recover`, every row is in
exactly one visible file. Staged sources are invisible to readers, so a run's folds never show a
row twice; folding *visible* files (`earmark compact`, the repair of duplicates) shows both the
new part and its sources between steps 2 and 3 (milliseconds; until the next earmark command
on the output when killed there).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from earmark.contracts import OUTPUT_SCHEMA
from earmark.sink.shards import (
    PART_PREFIX,
    PART_SUFFIX,
    TMP_PREFIX,
    list_parts,
    list_staged,
    publish,
)
from earmark.storage import Location, LocationLike

JOURNAL_DIR = "_commits"
DEFAULT_TARGET_MB = 128  # a part closes past this many compressed bytes of sources
ROW_GROUP_BYTES = 64 << 20  # Arrow bytes buffered per row group (bounds a fold's memory)
READ_BATCH_ROWS = 8192  # rows read from a source at a time
# Tests set this to stop a process between two steps ("journaled", "published",
# "source_deleted", "done"); nothing else does.
STEP_HOOK: Callable[[str], None] | None = None


@dataclass
class FoldResult:
    part: str | None  # None when every row was dropped
    rows: int
    sources: int


def _step(name: str) -> None:
    if STEP_HOOK is not None:
        STEP_HOOK(name)


def part_name(sources: list[str]) -> str:
    """A fold's part name: a hash of its sources' names, so a retried fold has the same one."""
    key = "\n".join(sorted(posixpath.basename(s) for s in sources))
    return f"{PART_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:24]}{PART_SUFFIX}"


def fold(
    out: LocationLike, sources: list[str], *, drop: dict[str, list[int]] | None = None
) -> FoldResult:
    """Fold `sources` (paths in the output's filesystem) into one part, less the rows `drop`
    names (source path → row indices); returns the part's path and its row count."""
    out = Location.of(out)
    fs, root = out.fs, out.path
    drop = drop or {}
    name = part_name(sources)
    final = out.join(name)
    journal = out.join(JOURNAL_DIR, name + ".json")
    keeps = any(_rows_of(fs, s) > len(set(drop.get(s, []))) for s in sources)
    record = {"part": name if keeps else None, "sources": [_rel(root, s) for s in sources]}
    publish(out, journal, json.dumps(record).encode())
    _step("journaled")
    rows = _write_part(out, final, sources, drop) if keeps else 0
    _step("published")
    for s in sources:
        fs.rm(s)
        _step("source_deleted")
    fs.rm(journal)
    _step("done")
    return FoldResult(final if keeps else None, rows, len(sources))


def recover(out: LocationLike) -> int:
    """Finish or undo the folds a killed process left; returns how many it found."""
    out = Location.of(out)
    fs, root = out.fs, out.path
    folder = out.join(JOURNAL_DIR)
    fs.invalidate_cache(folder)
    try:
        journals = [p for p in fs.ls(folder, detail=False) if p.endswith(".json")]
    except FileNotFoundError:
        return 0
    for journal in journals:
        try:
            record = json.loads(fs.cat_file(journal))
        except ValueError:  # cannot happen with an atomic journal; nothing was done after it
            fs.rm(journal)
            continue
        part = record.get("part")
        fs.invalidate_cache(root)
        if part is None or fs.exists(out.join(part)):
            for rel in record["sources"]:
                path = out.join(rel)
                if fs.exists(path):
                    fs.rm(path)
        fs.rm(journal)
    return len(journals)


def plan_folds(staged: list[tuple[str, int]], target_bytes: int, *, final: bool) -> list[list[str]]:
    """Groups of staged files of about `target_bytes` each, in order. Not `final`: only full
    groups (the rest waits for more batches); `final`: the remainder too."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for path, n in staged:
        current.append(path)
        size += n
        if size >= target_bytes:
            groups.append(current)
            current, size = [], 0
    if current and final:
        groups.append(current)
    return groups


def fold_staging(out: LocationLike, target_bytes: int) -> list[FoldResult]:
    """Fold every staged file into parts of about `target_bytes` (the end of a job)."""
    out = Location.of(out)
    staged = list_staged(out)
    return [fold(out, group) for group in plan_folds(staged, target_bytes, final=True)]


def _rel(root: str, path: str) -> str:
    return posixpath.relpath(path, root)


def _rows_of(fs: Any, path: str) -> int:
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def _write_part(out: Location, final: str, sources: list[str], drop: dict[str, list[int]]) -> int:
    fs = out.fs
    if out.is_local:
        tmp = posixpath.join(posixpath.dirname(final), f"{TMP_PREFIX}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            rows = _stream_rows(f, fs, sources, drop)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return rows
    f = fs.open(final, "wb")
    try:
        rows = _stream_rows(f, fs, sources, drop)
    except BaseException:
        f.discard()  # an upload never completed never appears
        f.closed = True
        raise
    f.close()  # completes the upload: the part appears whole
    return rows


def _stream_rows(sink: Any, fs: Any, sources: list[str], drop: dict[str, list[int]]) -> int:
    rows = 0
    pending: list[pa.Table] = []
    held = 0
    with pq.ParquetWriter(sink, OUTPUT_SCHEMA, compression="zstd") as writer:
        for src in sources:
            gone = set(drop.get(src, []))
            offset = 0
            with fs.open(src, "rb") as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=READ_BATCH_ROWS):
                    t = pa.Table.from_batches([batch])
                    if gone:
                        keep = [i for i in range(t.num_rows) if offset + i not in gone]
                        t = t.take(keep)
                    offset += batch.num_rows
                    if t.num_rows:
                        pending.append(t.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA))
                        held += t.nbytes
                        rows += t.num_rows
                    if held >= ROW_GROUP_BYTES:
                        writer.write_table(pa.concat_tables(pending))
                        pending, held = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending))
    return rows


@dataclass
class CompactResult:
    files_before: int
    files_after: int
    rows: int
    folds: int


def compact_output(out: LocationLike, target_bytes: int) -> CompactResult:
    """Fold an output's small files (staged batches, and committed parts under half the target,
    such as the one-file-per-batch outputs of earlier versions) into parts of about the target
    size, exactly once (each fold is journaled; a killed compaction resumes on the next run)."""
    out = Location.of(out)
    fs = out.fs
    recover(out)
    before = len(list_parts(out)) + len(list_staged(out))
    results = fold_staging(out, target_bytes)
    small = []
    for p in list_parts(out):
        size = int(fs.info(p).get("size") or 0)
        if size < target_bytes // 2:
            small.append((p, size))
    for group in plan_folds(small, target_bytes, final=True):
        if len(group) > 1:
            results.append(fold(out, group))
    parts = list_parts(out)
    rows = 0
    for p in parts:
        rows += _rows_of(fs, p)
    return CompactResult(before, len(parts), rows, len(results))
