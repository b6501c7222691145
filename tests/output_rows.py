"""Rows of the output schema for tests of the sink (ids, URIs, status, times)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from earmark.contracts import OUTPUT_SCHEMA


def rows_table(rows: list[tuple]) -> pa.Table:
    """(audio_id, uri, status, error_kind, minute of created_at) → a table of the output schema;
    uri None → file:///x.wav#ID."""
    n = len(rows)
    cols = {f.name: pa.nulls(n, f.type) for f in OUTPUT_SCHEMA}
    cols["audio_id"] = pa.array([r[0] for r in rows], pa.string())
    cols["uri"] = pa.array([r[1] or f"file:///x.wav#{r[0]}" for r in rows], pa.string())
    cols["status"] = pa.array([r[2] for r in rows], pa.string())
    cols["error_kind"] = pa.array([r[3] for r in rows], pa.string())
    at = [dt.datetime(2026, 12, 1, 0, r[4], tzinfo=dt.UTC) for r in rows]
    cols["created_at"] = pa.array(at, OUTPUT_SCHEMA.field("created_at").type)
    return pa.table(cols, schema=OUTPUT_SCHEMA)


def ok_rows(ids: list[str], minute: int = 1) -> pa.Table:
    return rows_table([(a, None, "ok", None, minute) for a in ids])
