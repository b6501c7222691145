"""Listing rows {audio_id, uri, size_bytes, meta, list_error}: how one listed file is described.

`audio_id` is stable across runs: a hash of the normalized URI, the size and the etag/mtime, so a
file that changes gets a new id and is annotated again while an unchanged one is skipped. A
member of a packed shard has the URI `SHARD#KEY` and the shard's size and version.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pyarrow as pa

from earmark.contracts import ErrorStage
from earmark.storage import Location, classify_os_error

AUDIO_EXTENSIONS = frozenset(
    "wav wave flac mp3 ogg oga opus m4a mp4 aac webm mka aif aiff aifc au snd wma caf amr".split()
)
MANIFEST_EXTENSIONS = (".parquet", ".jsonl", ".csv")
VERSION_KEYS = ("ETag", "etag", "mtime", "LastModified", "last_modified", "created")


def audio_id_for(uri: str, size: int | None, version: str | None) -> str:
    key = json.dumps([uri, size, version])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def version_of(info: dict[str, Any]) -> str | None:
    """etag when the store has one, else mtime: what changes when the content changes."""
    for key in VERSION_KEYS:
        if info.get(key) is not None:
            return str(info[key]).strip('"')
    return None


def is_manifest(source: str) -> bool:
    return source.lower().endswith(MANIFEST_EXTENSIONS)


def file_row(uri: str, info: dict[str, Any], meta: dict[str, str] | None = None) -> dict[str, Any]:
    """The listing row of a file whose info (size, etag/mtime) is already known."""
    size = info.get("size")
    return {
        "audio_id": audio_id_for(uri, size, version_of(info)),
        "uri": uri,
        "size_bytes": size,
        "meta": meta or None,
        "list_error": None,
    }


def meta_value(v: Any) -> str:
    """Carried values as strings for the row's `meta` map: text as is, the rest as JSON."""
    return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)


def stat_row(uri: str, meta: dict[str, str] | None, where: Location | None) -> dict[str, Any]:
    """The listing row of one named file (reached from `where`, the source that names it, with
    its filesystem and options); a file that cannot be stat'ed gets `list_error`."""
    row = {"uri": uri, "size_bytes": None, "meta": meta or None, "list_error": None}
    try:
        file = where.at(uri) if where is not None else Location(uri)
        fs, p = file.fs, file.path
        info = fs.info(p)
        if info.get("type") == "directory":
            raise IsADirectoryError(p)
        if info.get("islink"):
            os.stat(p)  # a broken link or a loop raises here, with its reason
        row["size_bytes"] = info.get("size")
        row["audio_id"] = audio_id_for(uri, row["size_bytes"], version_of(info))
    except Exception as exc:
        err = classify_os_error(exc, ErrorStage.LIST, uri)
        row["audio_id"] = audio_id_for(uri, None, None)
        row["list_error"] = {"kind": str(err.kind), "message": err.message}
    return row


# Listing rows as a table (`earmark annotate` hands them to the decode stage).
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
