"""The output folder's layout, and writing a batch of rows so that it lands exactly once.

    OUTPUT/part-<hash>.parquet        committed files, sized by `output_files` (readers see these)
    OUTPUT/_staging/<hash>.staged     one per annotated batch, folded into parts by sink.commit
    OUTPUT/_commits/<part>.json       the journal of a fold in progress (sink.commit)
    OUTPUT/_job.json, _summary.json   what made the rows; the last run's summary

A batch is first written to staging: its name is a hash of the sorted audio_ids it holds, so a
batch Ray retries rewrites the same name (an overwrite, not a second copy), and it appears whole
or not at all (local: temp file, fsync, rename; object stores publish an object when its upload
completes). Staged files are Parquet but not named `.parquet` and sit in an underscore folder, so
no reader (DuckDB/Polars globs, pyarrow/Spark/Ray Data folder reads) ever sees them; they become
visible only inside a committed part (sink.commit), which keeps the one-row-per-file guarantee
for anyone reading the folder while a job runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import posixpath
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from earmark.contracts import OUTPUT_SCHEMA, JobError
from earmark.storage import Location, LocationLike

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
STAGING_DIR = "_staging"
STAGED_SUFFIX = ".staged"
TMP_PREFIX = ".tmp-"
SUMMARY_NAME = "_summary.json"  # leading underscore: Parquet readers skip it
JOB_NAME = "_job.json"  # what made the rows: a rerun must be the same job to skip them
SHARD_PREFIX = PART_PREFIX  # older name, kept for readers of earlier outputs


def ids_digest(audio_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(audio_ids)).encode()).hexdigest()[:24]


def shard_name(audio_ids: list[str]) -> str:
    """The committed-part name for a set of rows (same rows → same name)."""
    return f"{PART_PREFIX}{ids_digest(audio_ids)}{PART_SUFFIX}"


def publish(out: Location, final: str, data: bytes) -> None:
    """Make `final` (a path in `out`'s filesystem) hold `data`, whole or not at all."""
    if out.is_local:
        folder = posixpath.dirname(final)
        os.makedirs(folder, exist_ok=True)
        tmp = posixpath.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    else:
        out.fs.pipe_file(final, data)  # one PUT: the object appears only when complete


def table_bytes(table: pa.Table) -> bytes:
    table = table.select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_shard(table: pa.Table, out: LocationLike) -> str:
    """Write rows as one committed part, atomically; returns its path. Same rows → same name."""
    out = Location.of(out)
    final = out.join(shard_name(table.column("audio_id").to_pylist()))
    publish(out, final, table_bytes(table))
    return final


def stage_shard(table: pa.Table, out: LocationLike) -> tuple[str, int]:
    """Write a batch into staging, atomically; returns (path, bytes). Same rows → same name."""
    out = Location.of(out)
    name = ids_digest(table.column("audio_id").to_pylist()) + STAGED_SUFFIX
    final = out.join(STAGING_DIR, name)
    data = table_bytes(table)
    publish(out, final, data)
    return final, len(data)


def _ls(fs: Any, folder: str) -> list[dict[str, Any]]:
    fs.invalidate_cache(folder)  # other processes wrote here since this one last looked
    try:
        return fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []


def list_parts(out: LocationLike) -> list[str]:
    """Committed part files, sorted by name."""
    out = Location.of(out)
    return sorted(
        i["name"]
        for i in _ls(out.fs, out.path)
        if posixpath.basename(i["name"]).startswith(PART_PREFIX) and i["name"].endswith(PART_SUFFIX)
    )


list_shards = list_parts


def list_staged(out: LocationLike) -> list[tuple[str, int]]:
    """Staged batch files with their sizes, sorted by name."""
    out = Location.of(out)
    return sorted(
        (i["name"], int(i.get("size") or 0))
        for i in _ls(out.fs, out.join(STAGING_DIR))
        if i["name"].endswith(STAGED_SUFFIX)
    )


def read_output(
    out: LocationLike, columns: list[str] | None = None, *, staged: bool = False
) -> pa.Table:
    """The rows a reader of the folder sees (committed parts; with `staged`, also the batches
    not folded yet); an empty table with the schema when there are none."""
    out = Location.of(out)
    fs = out.fs
    files = list_parts(out)
    if staged:
        files += [p for p, _ in list_staged(out)]
    schema = (
        OUTPUT_SCHEMA if columns is None else pa.schema([OUTPUT_SCHEMA.field(c) for c in columns])
    )
    tables = [schema.empty_table()]
    for s in files:
        with fs.open(s, "rb") as f:
            tables.append(pq.read_table(f, columns=columns).cast(schema))
    return pa.concat_tables(tables)


def claim_output(out: LocationLike, identity: dict[str, Any]) -> None:
    """Record this job's identity in the output, or refuse an output another job made.

    Rows of a scan, or of another model or task list, are not this job's work: counting them
    as done would skip every file and leave rows without the asked-for columns.
    """
    out = Location.of(out)
    fs, path = out.fs, out.join(JOB_NAME)
    if fs.exists(path):
        try:
            before = json.loads(fs.cat_file(path))
        except ValueError:
            before = None
        if before != identity:
            raise JobError(
                f"the output {out} holds rows of another job ({_describe(before)}); this job "
                f"is {_describe(identity)}. A rerun only continues the same job: choose another "
                f"output, or delete {out} to start over"
            )
        return
    if out.is_local:
        os.makedirs(out.path, exist_ok=True)
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


def clean_temp(out: LocationLike) -> int:
    """Remove temp files a killed run left behind (never complete files)."""
    out = Location.of(out)
    if not out.is_local:
        return 0
    n = 0
    for folder in (out.path, out.join(STAGING_DIR)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith(TMP_PREFIX):
                    os.unlink(os.path.join(folder, name))
                    n += 1
    return n


# The columns a batch returns to the driver once it is staged (the summary reads them; the
# driver folds staged files into parts by `_staged`/`_staged_bytes`).
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


def write_rows(batch: pa.Table, out: LocationLike) -> pa.Table:
    """Stage a batch of finished rows as one deterministic, atomic file (named by its sorted
    audio_ids, so a retried batch overwrites it); returns the summary columns with the staged
    file's path and size on every row."""
    if batch.num_rows == 0:
        return _with_staged(batch.select(SUMMARY_COLUMNS), "", 0)
    now = dt.datetime.now(dt.UTC)
    table = batch.set_column(
        batch.schema.get_field_index("created_at"),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.array([now] * batch.num_rows, pa.timestamp("us", tz="UTC")),
    )
    path, size = stage_shard(table, out)
    return _with_staged(table.select(SUMMARY_COLUMNS), path, size)


def _with_staged(t: pa.Table, path: str, size: int) -> pa.Table:
    n = t.num_rows
    t = t.append_column("_staged", pa.array([path] * n, pa.string()))
    return t.append_column("_staged_bytes", pa.array([size] * n, pa.int64()))
