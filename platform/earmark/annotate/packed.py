"""Packed shards in a decode task: listing rows → (row, audio bytes) per member.

A Parquet shard's members were listed from its footer (one listing row per row, grouped by row
group), so the task reads exactly those row groups. A tar shard was listed as one row; the task
streams it once, member by member, and skips members the output already holds (the done and
retry id sets of the job, `skip`), counting them like the listing tasks do. A storage error
while a shard is read is retried from the start of the shard (members already handed on are not
handed on again); past `limits.read_retries` the members not reached get one error row naming
the shard. Nothing here holds more than one member's bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from earmark.audio.fetch import wait_or_raise
from earmark.contracts import EarmarkError, LimitsSpec
from earmark.source.listing import audio_id_for
from earmark.source.packed import Member, iter_parquet_members
from earmark.source.tar import iter_tar_members
from earmark.storage import Location

REMOTE_BLOCK_BYTES = 8 << 20  # read-ahead block for shards in object stores


def _error(rec: dict[str, Any], err: EarmarkError) -> tuple[dict[str, Any], None]:
    out = dict(rec)
    out["list_error"] = {"kind": str(err.kind), "message": err.message, "stage": str(err.stage)}
    return out, None


def _with_member(rec: dict[str, Any], m: Member) -> tuple[dict[str, Any], bytes | None]:
    out = dict(rec)
    meta = dict(rec.get("meta") or {})
    meta.update(m.meta)
    out["meta"] = meta or None
    out["size_bytes"] = m.size
    if m.error is not None:
        return _error(out, m.error)
    return out, m.data


def member_rows(
    recs: list[dict[str, Any]],
    limits: LimitsSpec,
    source: Location | None,
    skip: tuple[Any, Any, Any] | None,
) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """(row, member bytes) of the listed members of packed shards of `source`."""
    by_shard: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in recs:
        p = r["packed"]
        by_shard.setdefault((p["uri"], p.get("row_group")), []).append(r)
    for (uri, _), group in by_shard.items():
        if group[0]["packed"]["kind"] == "tar":
            for rec in group:
                yield from _tar_rows(rec, limits, source, skip)
        else:
            yield from _parquet_rows(uri, group, limits, source)


def _open(uri: str, source: Location | None) -> Any:
    shard = source.at(uri) if source is not None else Location(uri)
    return shard.fs.open(shard.path, "rb", block_size=REMOTE_BLOCK_BYTES, cache_type="readahead")


def _with_retries(uri: str, limits: LimitsSpec, attempt_fn: Any) -> Iterator[Any]:
    """Run a generator over a shard, again from the start after a storage error; the caller's
    generator skips what it already handed on. Raises EarmarkError when retries run out."""
    attempt = 0
    while True:
        try:
            yield from attempt_fn()
            return
        except EarmarkError:
            raise
        except Exception as exc:
            wait_or_raise(exc, uri, attempt, limits)
            attempt += 1


def _parquet_rows(
    uri: str,
    recs: list[dict[str, Any]],
    limits: LimitsSpec,
    source: Location | None,
) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    p = recs[0]["packed"]
    wanted = {str(r["packed"]["row"]): r for r in recs}
    handed: set[str] = set()

    def attempt() -> Iterator[tuple[dict[str, Any], bytes | None]]:
        with _open(uri, source) as f:
            for m in iter_parquet_members(
                f,
                p["column"],
                row_groups=[p["row_group"]],
                max_bytes=limits.max_file_bytes,
                what=uri,
            ):
                if m.key in wanted and m.key not in handed:
                    handed.add(m.key)
                    yield _with_member(wanted[m.key], m)

    try:
        yield from _with_retries(uri, limits, attempt)
    except EarmarkError as err:
        for key, rec in wanted.items():
            if key not in handed:
                yield _error(rec, err)


def _tar_rows(
    rec: dict[str, Any],
    limits: LimitsSpec,
    source: Location | None,
    skip: tuple[Any, Any, Any] | None,
) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    shard = rec["packed"]
    handed: set[str] = set()

    def attempt() -> Iterator[tuple[dict[str, Any], bytes | None]]:
        with _open(shard["uri"], source) as f:
            for batch in _batched(
                iter_tar_members(f, max_bytes=limits.max_file_bytes, what=shard["uri"])
            ):
                fresh = [m for m in batch if m.key not in handed]
                handed.update(m.key for m in fresh)
                yield from _todo_members(rec, fresh, skip)

    try:
        yield from _with_retries(shard["uri"], limits, attempt)
    except EarmarkError as err:
        yield _error(rec, err)


def _batched(members: Iterator[Member], n: int = 64) -> Iterator[list[Member]]:
    batch: list[Member] = []
    for m in members:
        batch.append(m)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _todo_members(
    rec: dict[str, Any], members: list[Member], skip: tuple[Any, Any, Any] | None
) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    shard = rec["packed"]
    rows = []
    for m in members:
        if m.key == "" and m.error is not None:  # nothing could be read: the shard's own row
            rows.append(_error(rec, m.error))
            continue
        uri = f"{shard['uri']}#{m.key}"
        member = {
            "audio_id": audio_id_for(uri, shard["size"], shard["version"]),
            "uri": uri,
            "meta": rec.get("meta"),
            "list_error": None,
        }
        rows.append(_with_member(member, m))
    if skip is not None and rows:
        done, retry, tally = skip
        ids = [r["audio_id"] for r, _ in rows]
        is_done = done.contains(ids)
        again = retry.contains(ids) if len(retry) else np.zeros(len(ids), bool)
        keep = ~is_done | again
        tally.add.remote(len(rows), int((is_done & ~again).sum()), int(again.sum()))
        rows = [r for r, k in zip(rows, keep.tolist(), strict=True) if k]
    yield from rows
