"""The Parquet sink: deterministic shard names, atomic writes, resume, duplicate repair.

Exactly-once rests on three facts:
1. A shard's name is a hash of the sorted audio_ids it holds, so a task Ray retries rewrites the
   same name (an overwrite, not a second copy).
2. A shard appears whole or not at all: local files are written to a hidden temp name and renamed
   (atomic on POSIX); object stores publish an object only when its upload completes.
3. A rerun first reads the audio_ids already in the output and never schedules them again.
`repair_duplicates` checks the invariant at the end of every job and removes any duplicate row
(which (1)-(3) should make impossible) so the output holds one row per audio_id regardless; it
also drops the old row of a file that changed since it was annotated (its new row was written
by this job), so the output holds one row per file.
A rerun continues only the same job: `_job.json` records what made the rows (scan or annotate,
model, tasks), and an output made by another job is refused instead of counted as done.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from earmark.contracts import OUTPUT_SCHEMA, JobError
from earmark.storage import get_fs, is_local

SHARD_PREFIX = "part-"
TMP_PREFIX = ".tmp-"
SUMMARY_NAME = "_summary.json"  # leading underscore: Parquet readers skip it
JOB_NAME = "_job.json"  # what made the rows: a rerun must be the same job to skip them


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


@dataclass
class ResumeState:
    done: dict[str, str]  # audio_id → uri of every row in the output
    retry: dict[str, Any]  # audio_id → created_at of the error rows to annotate again
    stale: dict[str, Any]  # audio_id held twice → created_at of its newest row but one


def resume_state(
    output: str,
    storage_options: dict[str, Any] | None = None,
    retry_kinds: frozenset[str] | None = None,
) -> ResumeState:
    """What the output holds, in one read: the rows a rerun skips, (with `retry_kinds`; empty
    means every kind) the error rows it annotates again instead, and the older rows of any
    audio_id held twice (a run stopped between writing a retried row and removing the old
    one): the repair pass keeps the newest. Only the rare duplicates are looked at row by row;
    the driver holds one dict entry per row, as before."""
    try:
        t = read_output(output, storage_options, RESUME_COLUMNS)
    except (pa.ArrowInvalid, OSError) as exc:
        raise JobError(
            f"the output {output} holds a file earmark cannot read as one of its shards "
            f"({_first_line(exc)}); move it away or choose another output"
        ) from None
    ids = t.column("audio_id")
    done = dict(zip(ids.to_pylist(), t.column("uri").to_pylist(), strict=True))
    stale: dict[str, Any] = {}
    older: set[tuple[str, Any]] = set()  # (audio_id, created_at) of rows that are not newest
    if len(done) < t.num_rows:
        counts = t.group_by("audio_id").aggregate([("audio_id", "count")])
        twice = counts.filter(pc.greater(counts["audio_id_count"], 1))["audio_id"]
        times: dict[str, list[Any]] = {}
        dup_rows = t.filter(pc.is_in(ids, twice))
        for a, c in zip(*_columns(dup_rows, "audio_id", "created_at"), strict=True):
            times.setdefault(a, []).append(c)
        for a, ts in times.items():
            newest = max(ts, key=_time_key)
            before = [c for c in ts if _time_key(c) < _time_key(newest)]
            if before:  # equal times: the plain duplicate rule of repair_duplicates
                stale[a] = max(before, key=_time_key)
            older |= {(a, c) for c in before}
    retry: dict[str, Any] = {}
    if retry_kinds is not None:
        errors = t.filter(pc.equal(t["status"], "error"))
        if retry_kinds:
            errors = errors.filter(pc.is_in(errors["error_kind"], pa.array(sorted(retry_kinds))))
        for a, c in zip(*_columns(errors, "audio_id", "created_at"), strict=True):
            if (a, c) not in older:  # the file's newest row is the error
                retry[a] = c
    return ResumeState(done, retry, stale)


RESUME_COLUMNS = ["audio_id", "uri", "status", "error_kind", "created_at"]


def _columns(t: pa.Table, *names: str) -> list[list[Any]]:
    return [t.column(n).to_pylist() for n in names]


def _time_key(t: Any) -> tuple[int, Any]:
    return (0, 0) if t is None else (1, t)


def claim_output(
    output: str, identity: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> None:
    """Record this job's identity in the output, or refuse an output another job made.

    Rows of a scan, or of another model or task list, are not this job's work: counting them
    as done would skip every file and leave rows without the asked-for columns.
    """
    fs, root = get_fs(output, storage_options)
    path = posixpath.join(root.rstrip("/"), JOB_NAME)
    if fs.exists(path):
        try:
            before = json.loads(fs.cat_file(path))
        except ValueError:
            before = None
        if before != identity:
            raise JobError(
                f"the output {output} holds rows of another job ({_describe(before)}); this job "
                f"is {_describe(identity)}. A rerun only continues the same job: choose another "
                f"output, or delete {output} to start over"
            )
        return
    if is_local(fs):
        os.makedirs(root, exist_ok=True)
    fs.pipe_file(path, json.dumps(identity, sort_keys=True, indent=2).encode())


def _describe(identity: Any) -> str:
    if not isinstance(identity, dict):
        return f"an unreadable {JOB_NAME}"
    if identity.get("kind") == "scan":
        return "a scan"
    tasks = ", ".join(
        t["name"] if not t.get("prompt") else f"{t['name']}={t['prompt']!r}"
        for t in identity.get("tasks", [])
    )
    return f"model {identity.get('model')}, tasks {tasks}"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def clean_temp(output: str, storage_options: dict[str, Any] | None = None) -> int:
    """Remove temp files a killed run left behind (never complete shards)."""
    fs, root = get_fs(output, storage_options)
    if not is_local(fs) or not os.path.isdir(root):
        return 0
    stale = [n for n in os.listdir(root) if n.startswith(TMP_PREFIX)]
    for n in stale:
        os.unlink(os.path.join(root, n))
    return len(stale)


@dataclass
class RepairResult:
    duplicates: int  # rows whose audio_id another shard already held
    superseded: int  # old rows of files that changed, and old error rows annotated again
    rows: int  # rows in the whole output afterwards, earlier runs' included
    ok: int  # of which status ok


def repair_duplicates(
    output: str,
    storage_options: dict[str, Any] | None = None,
    superseded: frozenset[str] | set[str] = frozenset(),
    replaced: dict[str, Any] | None = None,
) -> RepairResult:
    """Enforce one row per audio_id across shards, drop the rows in `superseded` (old rows of
    files that changed, whose new row this job wrote) and the rows in `replaced` created no
    later than the time it gives (error rows annotated again, whose new row this job wrote
    under the same audio_id), and count what stays, in one pass.

    A shard is rewritten before the old one goes, so a crash here loses no row (it leaves a
    duplicate, which the next run removes). A rewritten shard is never looked at again: its
    name may be that of a later shard holding exactly the kept rows, which would otherwise be
    dropped as duplicates of themselves."""
    fs, _ = get_fs(output, storage_options)
    seen: set[str] = set()
    rewritten: set[str] = set()
    out = RepairResult(0, 0, 0, 0)
    replaced = replaced or {}
    for shard in list_shards(output, storage_options):
        if shard in rewritten:
            continue
        with fs.open(shard, "rb") as f:
            cols = pq.read_table(f, columns=["audio_id", "status", "created_at"])
        ids, status = cols.column("audio_id").to_pylist(), cols.column("status").to_pylist()
        created = cols.column("created_at").to_pylist()
        keep = []
        for i, a in enumerate(ids):
            if a in superseded or (a in replaced and _not_after(created[i], replaced[a])):
                out.superseded += 1
            elif a in seen:
                out.duplicates += 1
            else:
                keep.append(i)
                out.rows += 1
                out.ok += status[i] == "ok"
                seen.add(a)
        if len(keep) == len(ids):
            continue
        if keep:
            with fs.open(shard, "rb") as f:
                table = pq.read_table(f)
            rewritten.add(write_shard(table.take(keep), output, storage_options))
        fs.rm(shard)
    return out


def _not_after(created: Any, old: Any) -> bool:
    """Is a row no newer than the old row it replaces? (a row without a time is old)"""
    return created is None or (old is not None and created <= old)


# The columns a batch returns to the driver once its shard is written (the summary reads them).
SUMMARY_COLUMNS = [
    "audio_id",
    "status",
    "error_stage",
    "error_kind",
    "duration_s",
    "decode_s",
    "infer_s",
    "num_windows",
    "_pad_real",
    "_pad_total",
]


def write_rows(batch: pa.Table, output: str, storage_options: dict[str, Any] | None) -> pa.Table:
    """Write a batch of finished rows as one deterministic, atomic Parquet shard (named by its
    sorted audio_ids, so a retried batch overwrites it); returns the summary columns."""
    if batch.num_rows == 0:
        return batch.select(SUMMARY_COLUMNS)
    now = dt.datetime.now(dt.UTC)
    table = batch.set_column(
        batch.schema.get_field_index("created_at"),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.array([now] * batch.num_rows, pa.timestamp("us", tz="UTC")),
    )
    write_shard(table, output, storage_options or {})
    return table.select(SUMMARY_COLUMNS)
