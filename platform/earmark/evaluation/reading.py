"""Reading an earmark output, a predictions file and a reference manifest; making URIs comparable.

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
from earmark.evaluation.tagging import read_list
from earmark.storage import Location, LocationLike

REQUIRED_OUTPUT_COLUMNS = ("uri", "status")  # without them a row would be scored as an error
# Keys added to every row read for scoring: the file it came from and its 1-based row there, so
# a refusal can name both.
SOURCE_KEY, ROW_KEY = "_file", "_row"
# Columns of a predictions file that can hold the model's text, per task, most specific first:
# a `transcript` column beats `text` for ASR, and so on.
PREDICTION_COLUMNS: dict[str, tuple[str, ...]] = {
    "asr": ("transcript", "text"),
    "tags": ("tags", "text"),
    "caption": ("caption", "text"),
    "answer": ("answer", "text"),
}
# Key of a predictions row holding its answer text (an output row has a list of named answers).
ANSWER_KEY = "_answer"


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


def read_output_rows(output: LocationLike, columns: list[str] | tuple[str, ...]) -> list[dict]:
    """Output rows as dicts, each with the file it came from (SOURCE_KEY, a URL for remote
    storage) and its 1-based row in that file (ROW_KEY)."""
    out = Location.of(output)
    dataset = output_dataset(out)
    rows: list[dict[str, Any]] = []
    for fragment in dataset.get_fragments():
        name = fragment.path if out.is_local else out.uri(fragment.path)
        table = fragment.to_table(columns=list(columns), schema=dataset.schema)
        for n, row in enumerate(table.to_pylist(), 1):
            row[SOURCE_KEY], row[ROW_KEY] = name, n
            rows.append(row)
    return rows


def read_references(references: LocationLike, what: str = "reference manifest") -> list[dict]:
    """Rows of a `.jsonl`, `.csv`/`.tsv` or `.parquet` file (a reference manifest, or a
    predictions file: `what` names it in errors), as dicts."""
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
        raise JobError(f"{what} {path!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise JobError(
            f"{what} {path!r} is a folder; name a .jsonl, .csv or .parquet file"
        ) from exc
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
                if not isinstance(rows[-1], dict):
                    raise JobError(f"{path}:{n}: not a JSON object; write one object per line")
        return rows
    raise JobError(f"{what} {path!r}: use a .jsonl, .csv, .tsv or .parquet file")


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


def is_relative_uri(uri: str) -> bool:
    """True for a path that names no root: `data/a.wav`, `./a.wav`, `file://data/a.wav`."""
    uri = str(uri).strip()
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return "://" not in uri and not os.path.isabs(uri)


def manifest_base(references: LocationLike) -> str:
    """Directory of the manifest, used to resolve relative reference URIs."""
    refs = Location.of(references)
    if refs.is_local:
        return os.path.dirname(os.path.abspath(refs.path))
    return refs.fs.unstrip_protocol(posixpath.dirname(refs.path))


def prediction_columns(columns: list[str]) -> dict[str, str]:
    """Task → the column of a predictions file that holds the model's text for it."""
    used: dict[str, str] = {}
    for task, names in PREDICTION_COLUMNS.items():
        found = next((c for c in names if c in columns), None)
        if found:
            used[task] = found
    return used


def _cell_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):  # NaN: an empty cell
        return None
    if isinstance(value, list | tuple):
        return "; ".join(str(v) for v in value if v is not None)
    return str(value)


def _prediction_row(raw: dict[str, Any], used: dict[str, str]) -> dict[str, Any]:
    """A predictions row in the shape of an output row (status ok, the text in each task's
    output column)."""
    row: dict[str, Any] = {
        "audio_id": _cell_text(raw.get("audio_id")),
        "uri": _cell_text(raw.get("uri")),
        "status": "ok",
    }
    if "asr" in used:
        row["transcript"] = _cell_text(raw.get(used["asr"]))
    if "caption" in used:
        row["caption"] = _cell_text(raw.get(used["caption"]))
    if "answer" in used:
        row[ANSWER_KEY] = _cell_text(raw.get(used["answer"]))
    if "tags" in used:
        tags = raw.get(used["tags"])
        if isinstance(tags, str) and tags.strip().startswith("["):
            try:  # a list written as text (a CSV cell): its items, not text to split
                tags = read_list(tags)
            except ValueError:
                pass  # scored as raw text below
        if isinstance(tags, list | tuple):  # a list: the labels as given
            row["tags"] = [str(t) for t in tags if t is not None]
        else:  # text, split against the reference vocabulary like a model's raw tag text
            row["tags_raw"] = _cell_text(tags)
    return row


def read_predictions(predictions: LocationLike) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Rows of a predictions file made outside earmark (`.jsonl`, `.csv`/`.tsv`, `.parquet`),
    shaped like output rows, and the column used for each task (see PREDICTION_COLUMNS).

    Every row needs a `uri` (or `audio_id`) and the file needs a text column; a file naming
    one file twice is refused (which of the two texts would count?).
    """
    loc = Location.of(predictions)
    name = loc.url
    raw_rows = read_references(loc, what="predictions file")
    if not raw_rows:
        raise JobError(f"predictions file {name} has no rows")
    columns = sorted(set().union(*(r.keys() for r in raw_rows)))
    found = ", ".join(columns) or "none"
    if "uri" not in columns and "audio_id" not in columns:
        raise JobError(
            f"predictions file {name} has no `uri` column (columns found: {found}); add one "
            "naming each audio file as the reference manifest does (or an `audio_id` column)"
        )
    used = prediction_columns(columns)
    if not used:
        raise JobError(
            f"predictions file {name} has no `text` column (columns found: {found}); put the "
            "model's output in `text` (or in `transcript`, `caption`, `tags` or `answer`)"
        )
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(raw_rows, 1):
        row = _prediction_row(raw, used)
        key = (row["audio_id"] or "").strip() or (row["uri"] or "").strip()
        if not key:
            raise JobError(
                f"predictions file {name}: row {n} has no uri; give every row the file it is about"
            )
        if key in seen:
            raise JobError(
                f"predictions file {name}: rows {seen[key]} and {n} are both for {key}; keep "
                "one prediction per file"
            )
        seen[key] = n
        row[SOURCE_KEY], row[ROW_KEY] = name, n
        rows.append(row)
    return rows, used
