"""List a source into rows {audio_id, uri, size_bytes, meta, list_error}.

A source is an fsspec URL (folder, prefix, or glob) or a manifest file (.parquet/.jsonl/.csv) with
a `uri` column; the manifest's other columns are carried into the output as `meta` strings.
`audio_id` is stable across runs: a hash of the normalized URI, the size and the etag/mtime, so a
file that changes gets a new id and is annotated again while an unchanged one is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from earmark.contracts import ErrorStage, JobError
from earmark.storage import classify_os_error, full_uri, get_fs

AUDIO_EXTENSIONS = frozenset(
    "wav wave flac mp3 ogg oga opus m4a mp4 aac webm mka aif aiff aifc au snd wma caf amr".split()
)
MANIFEST_EXTENSIONS = (".parquet", ".jsonl", ".csv")
STAT_THREADS = 32  # manifest rows are stat'ed in parallel: object stores answer HEAD slowly


def audio_id_for(uri: str, size: int | None, version: str | None) -> str:
    key = json.dumps([uri, size, version])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _version(info: dict[str, Any]) -> str | None:
    """etag when the store has one, else mtime: what changes when the content changes."""
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return None


def is_manifest(source: str) -> bool:
    return source.lower().endswith(MANIFEST_EXTENSIONS)


def list_source(source: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All files of a source as listing rows, sorted by URI and deduplicated.

    Raises JobError when the source itself cannot be listed (the job cannot start).
    """
    try:
        rows = (
            _list_manifest(source, storage_options)
            if is_manifest(source)
            else _list_files(source, storage_options)
        )
    except JobError:
        raise
    except Exception as exc:
        raise JobError(
            f"source {source!r} cannot be listed ({type(exc).__name__}: {exc}). Check the path "
            "or bucket, the endpoint and the credentials."
        ) from exc
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(r["audio_id"], r)  # a manifest naming a file twice yields one row
    return sorted(seen.values(), key=lambda r: r["uri"])


def _list_files(source: str, storage_options: dict[str, Any] | None) -> list[dict[str, Any]]:
    fs, path = get_fs(source, storage_options)
    if any(ch in path for ch in "*?[") and not fs.exists(path):  # a real "take [1]" is a name
        infos = fs.glob(path, detail=True)
        if not infos:
            raise JobError(f"source glob {source!r} matched no files")
    else:
        if not fs.exists(path):
            raise JobError(f"source {source!r} does not exist")
        if fs.isfile(path):
            infos = {path: fs.info(path)}
        else:
            infos = fs.find(path, detail=True)
        infos = {
            p: i
            for p, i in infos.items()
            if posixpath.splitext(p)[1].lower().lstrip(".") in AUDIO_EXTENSIONS
        }
    rows = []
    for p, info in infos.items():
        if info.get("type") == "directory":
            continue
        uri = full_uri(fs, p)
        size = info.get("size")
        row = {
            "audio_id": audio_id_for(uri, size, _version(info)),
            "uri": uri,
            "size_bytes": size,
            "meta": None,
            "list_error": None,
        }
        if info.get("islink"):  # the link's own info: stat its target (broken? a loop?)
            row = stat_row(uri, None, storage_options)
        rows.append(row)
    return rows


def read_manifest(source: str, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """Manifest records as dicts; relative URIs are resolved against the manifest's folder."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    fs, path = get_fs(source, storage_options)
    if not fs.exists(path):
        raise JobError(f"manifest {source!r} does not exist")
    with fs.open(path, "rb") as f:
        low = path.lower()
        if low.endswith(".parquet"):
            table = pq.read_table(f)
        elif low.endswith(".jsonl"):
            table = pajson.read_json(f)
        else:
            table = pacsv.read_csv(f)
    if "uri" not in table.column_names:
        raise JobError(
            f"manifest {source!r} has no 'uri' column (columns: {', '.join(table.column_names)})"
        )
    base = posixpath.dirname(path)
    records = table.to_pylist()
    for rec in records:
        uri = str(rec.get("uri") or "").strip()
        if uri.startswith("file://"):
            uri = "file://" + posixpath.normpath(uri.removeprefix("file://"))
        elif uri and "://" not in uri:
            # absolute paths are local files; relative ones live beside the manifest
            uri = (
                "file://" + posixpath.normpath(uri)
                if uri.startswith("/")
                else full_uri(fs, posixpath.join(base, uri))
            )
        rec["uri"] = uri
    empty = [i + 1 for i, rec in enumerate(records) if not rec["uri"]]
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (" ..." if len(empty) > 10 else "")
        raise JobError(
            f"manifest {source!r} has {len(empty)} row(s) with an empty 'uri' (row {shown}); "
            "every row must name a file"
        )
    return records


def _meta_value(v: Any) -> str:
    """Manifest values as strings for the row's `meta` map: text as is, the rest as JSON."""
    return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)


def stat_row(
    uri: str, meta: dict[str, str] | None, storage_options: dict[str, Any] | None
) -> dict[str, Any]:
    """The listing row of one named file; a file that cannot be stat'ed gets `list_error`."""
    row = {"uri": uri, "size_bytes": None, "meta": meta or None, "list_error": None}
    try:
        fs, p = get_fs(uri, storage_options)
        info = fs.info(p)
        if info.get("type") == "directory":
            raise IsADirectoryError(p)
        if info.get("islink"):
            os.stat(p)  # a broken link or a loop raises here, with its reason
        row["size_bytes"] = info.get("size")
        row["audio_id"] = audio_id_for(uri, row["size_bytes"], _version(info))
    except Exception as exc:
        err = classify_os_error(exc, ErrorStage.LIST, uri)
        row["audio_id"] = audio_id_for(uri, None, None)
        row["list_error"] = {"kind": str(err.kind), "message": err.message}
    return row


def list_named(paths: list[str]) -> list[dict[str, Any]]:
    """Listing rows for paths named one by one (`earmark annotate`): a folder gives its audio
    files, anything else exactly one row, an error row when it is missing or unreadable."""
    rows = []
    for path in paths:
        if os.path.isdir(path):
            rows.extend(list_source(path))
        else:
            rows.append(stat_row("file://" + os.path.abspath(path), None, None))
    return rows


def _list_manifest(source: str, storage_options: dict[str, Any] | None) -> list[dict[str, Any]]:
    records = read_manifest(source, storage_options)

    def stat(rec: dict[str, Any]) -> dict[str, Any]:
        # a null (or a column this row lacks) is no entry, not an empty string
        meta = {k: _meta_value(v) for k, v in rec.items() if k != "uri" and v is not None}
        return stat_row(rec["uri"], meta, storage_options)

    with ThreadPoolExecutor(STAT_THREADS) as pool:
        return list(pool.map(stat, records))


# Listing rows as a table (the batch job hands groups of them to the decode tasks).
LISTING_SCHEMA = pa.schema(
    [
        ("audio_id", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("meta", pa.map_(pa.string(), pa.string())),
        ("list_error", pa.struct([("kind", pa.string()), ("message", pa.string())])),
    ]
)


def listing_table(rows: list[dict[str, Any]]) -> pa.Table:
    cols = {n: [r.get(n) for r in rows] for n in LISTING_SCHEMA.names}
    cols["meta"] = [list(m.items()) if isinstance(m, dict) else m for m in cols["meta"]]
    return pa.table(cols, schema=LISTING_SCHEMA)
