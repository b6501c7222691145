"""What an output already holds, read once: the ids a rerun skips, the error rows it retries, and
the rows that must go so that the output holds one row per file.

The output is read column-wise, file by file, into compact arrays (a 24-byte id per row, a hash
of the URI, the time), never into Python objects per row, and the set of done ids travels to the
listing tasks as one sorted array in Ray's object store: each listing task drops the files that
are done with a binary search (`IdSet.contains`), so the driver never holds the listing or the
output (the anti-join of the listing against the output is spread over the listing tasks).

One row per file, decided in one place (`rows_to_drop`):
- one row per audio_id: the newest (`created_at`) stays; an older row is an error row that a
  retry replaced, or a duplicate a crashed run left (equal times: the first stays);
- one row per URI: when a file changed since it was annotated (new size or etag/mtime, so a new
  audio_id), the row of the newest version stays.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from earmark.contracts import JobError
from earmark.sink.shards import list_parts, list_staged
from earmark.storage import Location, LocationLike

ID_BYTES = 24  # audio_id: 24 hex characters
INDEX_COLUMNS = ["audio_id", "uri", "status", "error_kind", "created_at"]


class IdSet:
    """A sorted array of audio_ids with vectorised membership tests."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.unique(ids.astype(f"S{ID_BYTES}"))

    @classmethod
    def of(cls, ids: list[str] | pa.Array | pa.ChunkedArray) -> IdSet:
        return cls(_as_bytes(ids))

    def __len__(self) -> int:
        return len(self.ids)

    def contains(self, ids: list[str] | pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
        query = ids if isinstance(ids, np.ndarray) else _as_bytes(ids)
        if not len(self.ids) or not len(query):
            return np.zeros(len(query), dtype=bool)
        pos = np.searchsorted(self.ids, query)
        pos[pos == len(self.ids)] = 0
        return self.ids[pos] == query


def _as_bytes(ids: Any) -> np.ndarray:
    if isinstance(ids, pa.ChunkedArray | pa.Array):
        ids = ids.to_numpy(zero_copy_only=False)
    return np.asarray(ids, dtype=f"S{ID_BYTES}")


@dataclass
class OutputIndex:
    done: IdSet  # every audio_id with a row (committed or staged)
    retry: IdSet  # ids whose newest row is an error of a kind asked to retry
    drop: dict[str, list[int]] = field(default_factory=dict)  # file → rows to remove
    duplicates: int = 0  # rows of an id held twice at the same time
    superseded: int = 0  # older rows of an id or a URI
    rows: int = 0  # rows that stay
    ok: int = 0  # of which status ok


def scan_output(out: LocationLike, retry_kinds: frozenset[str] | None = None) -> OutputIndex:
    """Read the output's committed and staged files once (`retry_kinds`: error kinds whose rows
    a rerun annotates again; empty: every kind; None: none)."""
    out = Location.of(out)
    fs, root = out.fs, out.path
    files = list_parts(out) + [p for p, _ in list_staged(out)]
    ids, uri_hash, created, ok, retryable, origin, row = [], [], [], [], [], [], []
    for n, path in enumerate(files):
        try:
            with fs.open(path, "rb") as f:
                t = pq.read_table(f, columns=INDEX_COLUMNS)
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise JobError(
                f"the output {out} holds a file earmark cannot read as one of its own "
                f"({posixpath.relpath(path, root)}: {_first_line(exc)}); move it away or choose "
                "another output"
            ) from None
        ids.append(_as_bytes(t["audio_id"]))
        uri_hash.append(np.fromiter(map(hash, t["uri"].to_pylist()), np.int64, t.num_rows))
        ts = pc.cast(t["created_at"], pa.int64()).fill_null(-1).to_numpy()
        created.append(ts)
        status = t["status"].to_numpy(zero_copy_only=False)
        ok.append(status == "ok")
        err = status == "error"
        if retry_kinds:
            kinds = np.asarray(t["error_kind"].to_numpy(zero_copy_only=False), dtype=object)
            err &= np.isin(kinds, sorted(retry_kinds))
        retryable.append(err if retry_kinds is not None else np.zeros(t.num_rows, bool))
        origin.append(np.full(t.num_rows, n, np.int32))
        row.append(np.arange(t.num_rows, dtype=np.int64))
    if not files:
        empty = IdSet(np.array([], dtype=f"S{ID_BYTES}"))
        return OutputIndex(empty, empty)
    cat = np.concatenate
    all_ids, hashes, times, origin, row = (
        cat(ids),
        cat(uri_hash),
        cat(created),
        cat(origin),
        cat(row),
    )

    def real_uris(rows: np.ndarray) -> np.ndarray:
        return _read_uris(fs, files, origin[rows], row[rows])

    gone, same_time = rows_to_drop(all_ids, hashes, times, real_uris)
    keep = ~gone
    index = OutputIndex(
        done=IdSet(all_ids),
        retry=IdSet(all_ids[keep & cat(retryable)]),
        duplicates=int((gone & same_time).sum()),
        superseded=int((gone & ~same_time).sum()),
        rows=int(keep.sum()),
        ok=int((keep & cat(ok)).sum()),
    )
    for f_idx, r_idx in zip(origin[gone].tolist(), row[gone].tolist(), strict=True):
        index.drop.setdefault(files[f_idx], []).append(r_idx)
    return index


def _losers(
    key: np.ndarray, created: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Of `rows`, those not newest within their key, and the newest row of each one's key
    (stable: among equal times the earlier row stays)."""
    order = rows[np.lexsort((-created[rows], key[rows]))]
    k = key[order]
    first = np.ones(len(order), bool)
    first[1:] = k[1:] != k[:-1]
    head = order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
    return order[~first], head[~first]


def rows_to_drop(
    ids: np.ndarray,
    uri_hash: np.ndarray,
    created: np.ndarray,
    real_uris: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows to remove, of which: same time as the row that stays) by the module's rules.

    URIs are compared by a 64-bit hash first; rows that share a hash are then compared by
    their real URI (`real_uris(rows)` reads them), so a collision never drops a row."""
    n = len(ids)
    gone = np.zeros(n, bool)
    same_time = np.zeros(n, bool)
    losers, winners = _losers(ids, created, np.arange(n))
    gone[losers] = True
    same_time[losers] = created[losers] == created[winners]
    live = np.flatnonzero(~gone)
    _, inverse, counts = np.unique(uri_hash[live], return_inverse=True, return_counts=True)
    shared = live[counts[inverse] > 1]  # rows whose URI hash another row has: rare
    if len(shared):
        uris = real_uris(shared) if real_uris is not None else uri_hash[shared]
        _, key = np.unique(uris, return_inverse=True)
        full = np.zeros(n, np.int64)
        full[shared] = key
        losers, winners = _losers(full, created, shared)
        gone[losers] = True
        same_time[losers] = created[losers] == created[winners]
    return gone, same_time


def _read_uris(fs: Any, files: list[str], origin: np.ndarray, row: np.ndarray) -> np.ndarray:
    out = np.empty(len(origin), dtype=object)
    for f_idx in np.unique(origin).tolist():
        mask = origin == f_idx
        with fs.open(files[f_idx], "rb") as f:
            col = pq.read_table(f, columns=["uri"])["uri"]
        out[mask] = [col[int(r)].as_py() for r in row[mask]]
    return out.astype(str)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
