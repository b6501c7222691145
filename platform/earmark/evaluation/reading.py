"""Reading an earmark output and a reference manifest; making URIs comparable.

Shared by `earmark eval` and `earmark report`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from earmark.contracts import OUTPUT_SCHEMA, JobError
from earmark.storage import Location, LocationLike

REQUIRED_OUTPUT_COLUMNS = ("uri", "status")  # without them a row would be scored as an error


def output_dataset(output: LocationLike) -> ds.Dataset:
    """The Parquet files of an output (a directory, searched recursively, or one file).

    Files and folders whose name starts with `_` or `.` (markers, temporary parts) are skipped.
    Files written by an older schema get nulls for the columns they lack.
    """
    out = Location.of(output)
    name = out.url
    try:
        fs, path = out.fs, out.path
        if fs.isdir(path):
            root = path
            files = sorted(
                p
                for p in fs.find(root)
                if p.endswith(".parquet")
                and not any(
                    part.startswith(("_", ".")) for part in posixpath.relpath(p, root).split("/")
                )
            )
        elif fs.exists(path):
            files = [path]
        else:
            raise JobError(f"output {name!r} does not exist")
    except JobError:
        raise
    except Exception as exc:
        raise JobError(f"cannot list output {name!r} ({type(exc).__name__}: {exc})") from exc
    if not files:
        raise JobError(f"no Parquet files under {name!r}: is this an earmark output directory?")
    for f in files[:1]:  # one footer (a foreign file among others: rows without a status)
        try:
            with fs.open(f, "rb") as fh:
                names = set(pq.read_schema(fh).names)
        except Exception as exc:
            raise JobError(f"{f} is not a readable Parquet file ({type(exc).__name__})") from exc
        missing = [c for c in REQUIRED_OUTPUT_COLUMNS if c not in names]
        if missing:
            raise JobError(
                f"{f} has no {', '.join(repr(c) for c in missing)} column: it is not an earmark "
                "output file (every row of one names its file and says ok or error); point "
                "earmark eval at the folder `earmark run` wrote"
            )
    return ds.dataset(files, format="parquet", filesystem=fs, schema=OUTPUT_SCHEMA)


def read_output(
    output: LocationLike, columns: list[str] | tuple[str, ...] | None = None
) -> pa.Table:
    """Output rows as one Arrow table with OUTPUT_SCHEMA (optionally only some columns)."""
    return output_dataset(output).to_table(columns=list(columns) if columns else None)


def read_references(references: LocationLike) -> list[dict[str, Any]]:
    """Rows of a `.jsonl`, `.csv`/`.tsv` or `.parquet` reference manifest, as dicts."""
    refs = Location.of(references)
    fs, fpath, path = refs.fs, refs.path, refs.url
    low = fpath.lower()
    try:
        if low.endswith(".parquet"):
            with fs.open(fpath, "rb") as f:
                return pq.read_table(f).to_pylist()
        with fs.open(fpath, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise JobError(f"reference manifest {path!r} does not exist") from exc
    if low.endswith((".csv", ".tsv")):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if low.endswith(".tsv") else ",")
        return [dict(r) for r in reader]
    if low.endswith((".jsonl", ".json", ".ndjson")):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise JobError(f"{path}:{n}: not a JSON object ({exc})") from exc
        return rows
    raise JobError(f"reference manifest {path!r}: use a .jsonl, .csv, .tsv or .parquet file")


def canonical_uri(uri: str, base: str | None = None) -> str:
    """Comparable form of a URI: local paths absolute and normalised; URLs with a lowercase
    scheme, no leading slashes after `://` (`memory:///a` = `memory://a`) and `.`/`..` resolved.

    `base` is the directory relative paths are resolved against (a local path or a URL prefix).
    """
    uri = str(uri).strip()
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" not in uri and not os.path.isabs(uri) and base:
        uri = base.rstrip("/") + "/" + uri if "://" in base else os.path.join(base, uri)
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        if scheme.lower() == "file":
            return canonical_uri(rest)
        return f"{scheme.lower()}://{posixpath.normpath(rest.lstrip('/'))}"
    return os.path.normpath(os.path.abspath(uri))


def manifest_base(references: LocationLike) -> str:
    """Directory of the manifest, used to resolve relative reference URIs."""
    refs = Location.of(references)
    if refs.is_local:
        return os.path.dirname(os.path.abspath(refs.path))
    return refs.fs.unstrip_protocol(posixpath.dirname(refs.path))
