"""The listing half of the Ray Data graph: source units → listing rows → todo groups.

    units (planned by the driver) → expand (a folder's top level, in a task)
          → list + skip done + group (tasks, parallel over units, streamed page by page)
          → one decode group per block

Skipping done files is the anti-join of the listing against the output: each listing task
holds the output's done ids as one sorted array from the object store (sink.index.IdSet) and
drops the files already there with a binary search, so the driver never holds the listing nor
the output's ids. A tally actor counts what was listed, skipped and retried, for the progress
line and the summary.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from earmark.source.walk import expand_unit, list_unit
from earmark.storage import Location

# One decode group = one decode task. Scheduling a Ray task costs ~10-100 ms of driver and
# raylet time (more on a busy machine), as much as decoding a short clip, and the decode stage
# runs on the CPUs the actors leave free (often one): with one file per task, short files made
# the decode stage the bottleneck (bench run: 154 demo clips, 60 ms of work and ~170 ms between
# tasks each). Small files therefore share a task, up to `files_per_batch` files (so one task's
# output is one Annotator batch and every actor gets work; a scan takes SCAN_GROUP_FILES, since
# each group is one staged file) and DECODE_TASK_BYTES; a large file still gets a task of its
# own, so big files stay spread over the cluster and a retry stays cheap.
DECODE_TASK_BYTES = 8 << 20  # compressed bytes per decode task (≈1 min of WAV, ≈8 of MP3)
SCAN_GROUP_FILES = 256


class Tally:
    """Counts of the listing, kept by a small actor the listing and decode tasks report to.
    `units_open` counts listing units not yet listed to the end: the planned ones, plus the
    parts an expand task splits a folder into (counted before they are handed on, so the count
    cannot reach 0 while a part is in flight), less each unit a listing task finished. At 0 the
    source is listed (a tar shard's members are still counted as its decode task reads it)."""

    def __init__(self, units: int = 0) -> None:
        self.listed = self.done_before = self.retried = 0
        self.units_open = units

    def units(self, delta: int) -> None:
        self.units_open += delta

    def add(self, listed: int, done_before: int, retried: int) -> None:
        self.listed += listed
        self.done_before += done_before
        self.retried += retried

    def totals(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "done_before": self.done_before,
            "retried": self.retried,
            "listing": self.units_open > 0,
        }


def start_tally(units: int) -> Any:
    import ray

    from earmark.compute.resources import on_this_node

    return (
        ray.remote(Tally)
        .options(num_cpus=0, max_restarts=0, scheduling_strategy=on_this_node())
        .remote(units)
    )


class Grouper:
    """Listing rows → decode groups (see DECODE_TASK_BYTES); rows of one packed shard's row
    group stay together, so its decode task reads that row group once."""

    def __init__(self, max_files: int) -> None:
        self.max_files = max_files
        self.rows: list[dict[str, Any]] = []
        self.size = 0
        self.key: Any = None

    def add(self, row: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        packed = row.get("packed") or {}
        key = (
            (packed.get("uri"), packed.get("row_group"))
            if packed.get("kind") == "parquet"
            else None
        )
        b = row.get("size_bytes") or 0
        n = len(self.rows)
        if n and (
            key != self.key
            or (key is None and (n >= self.max_files or self.size + b > DECODE_TASK_BYTES))
        ):
            yield from self.flush()
        self.rows.append(row)
        self.size += b
        self.key = key
        if key is None and len(self.rows) >= self.max_files:  # full: hand it on at once
            yield from self.flush()

    def flush(self) -> Iterator[list[dict[str, Any]]]:
        if self.rows:
            yield self.rows
        self.rows, self.size, self.key = [], 0, None


def groups_table(groups: list[list[dict[str, Any]]]) -> pa.Table:
    return pa.table(
        {
            "files": [pickle.dumps(g, protocol=pickle.HIGHEST_PROTOCOL) for g in groups],
            "n": [len(g) for g in groups],
        }
    )


def expand_fn(source: Location, tally: Any):
    import ray

    def expand(batch: pa.Table) -> Iterator[pa.Table]:
        for unit in map(pickle.loads, batch.column("unit").to_pylist()):
            split = unit["kind"] == "root"  # other units pass as they are
            for part in expand_unit(unit, source):
                if split:  # counted before it is handed on (see Tally)
                    ray.get(tally.units.remote(1))
                yield pa.table({"unit": [pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)]})
            if split:
                tally.units.remote(-1)

    return expand


def list_fn(
    source: Location,
    audio_col: str | None,
    max_files: int,
    index: dict[str, Any],
    tally: Any,
):
    """The listing task: units → todo groups, done files skipped (see the module docstring)."""

    def list_units(batch: pa.Table) -> Iterator[pa.Table]:
        done, retry = resolve_index(index)
        grouper = Grouper(max_files)
        for unit in batch.column("unit").to_pylist():
            for page in list_unit(pickle.loads(unit), source, audio_col):
                ids = [r["audio_id"] for r in page]
                is_done = done.contains(ids)
                again = retry.contains(ids) if len(retry) else np.zeros(len(ids), bool)
                todo = ~is_done | again
                listed = sum(not (r.get("packed") or {}).get("kind") == "tar" for r in page)
                tally.add.remote(listed, int((is_done & ~again).sum()), int(again.sum()))
                out: list[list[dict[str, Any]]] = []
                for r, keep in zip(page, todo.tolist(), strict=True):
                    if keep:
                        out.extend(grouper.add(r))
                if out:
                    yield groups_table(out)
            out = list(grouper.flush())
            if out:
                yield groups_table(out)
            tally.units.remote(-1)

    return list_units


_INDEX_CACHE: dict[Any, Any] = {}


def resolve_index(index: dict[str, Any]) -> tuple[Any, Any]:
    """The done and retry id sets (object refs resolved once per worker process)."""
    import ray

    key = (index["done"].hex(), index["retry"].hex())
    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = (ray.get(index["done"]), ray.get(index["retry"]))
    return _INDEX_CACHE[key]
