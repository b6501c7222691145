"""A source as a stream of listing units, and each unit as a stream of listing rows.

The driver only plans units (`plan_units`: cheap, streamed, nothing per file is kept): each
subfolder or subprefix of a folder source, each chunk of a manifest, each packed shard named by
a glob. Ray tasks list the units in parallel (`list_unit`), page by page, so rows reach decoding
while the rest is still being listed and no process ever holds the whole listing.

Packed shards found anywhere (`.parquet` with an audio column, WebDataset `.tar`/`.tar.gz`/
`.tgz`) list as their members: a Parquet shard's rows from its footer alone (one listing row per
row: `SHARD#ROW`), a tar shard as one row that the decode task expands member by member (a tar
has no index; reading it twice to list it would double the I/O).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from earmark.contracts import ErrorKind, ErrorStage, JobError
from earmark.source import manifest as manifests
from earmark.source.listing import (
    AUDIO_EXTENSIONS,
    audio_id_for,
    file_row,
    is_manifest,
    stat_row,
    version_of,
)
from earmark.source.packed import audio_column, is_tar_shard, parquet_row_groups
from earmark.storage import Location, LocationLike, classify_os_error
from earmark.storage.paging import iter_file_pages, iter_top_level

PAGE_ROWS = 1000  # listing rows handed on at a time
STAT_THREADS = 32  # files named one by one (globs, manifests without sizes) are stat'ed in parallel
PATHS_PER_UNIT = 10_000  # files of a glob listed by one task


def is_packed_name(path: str) -> bool:
    return is_tar_shard(path) or path.lower().endswith(".parquet")


def _wanted(path: str) -> bool:
    ext = posixpath.splitext(path)[1].lower().lstrip(".")
    return ext in AUDIO_EXTENSIONS or is_packed_name(path)


def plan_units(source: LocationLike, audio_col: str | None = None) -> Iterator[dict[str, Any]]:
    """Units of work for the listing tasks (each names its files by full URI). Raises JobError,
    before any work, when the source cannot be listed: missing, a glob matching nothing, a
    manifest without a usable `uri`."""
    source = Location.of(source)
    name = source.url
    try:
        fs, path = source.fs, source.path
        if is_manifest(name) and not _is_packed_parquet(fs, path, name, audio_col):
            yield from manifests.plan_chunks(source)
            return
        if any(ch in path for ch in "*?[") and not fs.exists(path):  # "take [1]" is a name
            matches = sorted(fs.glob(path))
            if not matches:
                raise JobError(f"source glob {name!r} matched no files")
            uris = [source.uri(m) for m in matches]
            for i in range(0, len(uris), PATHS_PER_UNIT):
                yield {"kind": "paths", "paths": uris[i : i + PATHS_PER_UNIT]}
            return
        if not fs.exists(path):
            raise JobError(f"source {name!r} does not exist")
        if fs.isfile(path):
            yield {"kind": "paths", "paths": [source.uri(path)]}
            return
        yield {"kind": "root", "path": source.uri(path)}
    except JobError:
        raise
    except Exception as exc:
        raise JobError(
            f"source {name!r} cannot be listed ({type(exc).__name__}: {exc}). Check the path "
            "or bucket, the endpoint and the credentials."
        ) from exc


def expand_unit(unit: dict[str, Any], source: Location) -> Iterator[dict[str, Any]]:
    """A folder's root becomes one unit per subfolder and pages of its own files (found while
    walking it, so they are not listed twice); every other unit stays as it is. This runs in a
    task: a flat prefix of a million objects is a thousand requests, too slow for the driver."""
    if unit["kind"] != "root":
        yield unit
        return
    folder = source.at(unit["path"])
    page: list[dict[str, Any]] = []
    for child, info in iter_top_level(folder.fs, folder.path):
        if info is None:
            yield {"kind": "tree", "path": folder.uri(child)}
            continue
        page.append(info)
        if len(page) >= PAGE_ROWS:
            yield {"kind": "infos", "path": unit["path"], "infos": page}
            page = []
    if page:
        yield {"kind": "infos", "path": unit["path"], "infos": page}


def _is_packed_parquet(fs: Any, path: str, source: str, audio_col: str | None) -> bool:
    if not path.lower().endswith(".parquet") or not fs.exists(path):
        return False
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        schema = pq.ParquetFile(f).schema_arrow
    try:
        col = audio_column(schema, audio_col)
    except ValueError as exc:
        raise JobError(f"source {source!r}: {exc}") from None
    return col is not None and (audio_col is not None or "uri" not in schema.names)


def list_unit(
    unit: dict[str, Any], source: Location, audio_col: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Pages of listing rows of one unit of `source` (see the module docstring); its files
    share the source's filesystem."""
    if unit["kind"] == "manifest":
        yield from manifests.list_chunk(unit, source)
        return
    where = source.at(unit.get("path") or unit["paths"][0])
    fs, path = where.fs, where.path
    if unit["kind"] == "paths":
        paths = [where.path_of(u) for u in unit["paths"]]  # one glob's matches: one filesystem
        yield from _list_paths(where, paths, audio_col)
        return
    pages = (
        [unit["infos"]]
        if unit["kind"] == "infos"
        else iter_file_pages(fs, path, page_size=PAGE_ROWS)
    )
    for page in pages:
        rows: list[dict[str, Any]] = []
        for info in page:
            p = info["name"]
            if not _wanted(p):
                continue
            if is_packed_name(p):
                yield from _flush(rows)
                yield from list_packed(where, p, info, audio_col)
            elif info.get("islink"):  # the link's own info: stat its target (broken? a loop?)
                rows.append(stat_row(where.uri(p), None, where))
            else:
                rows.append(file_row(where.uri(p), info))
        yield from _flush(rows)


def _flush(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    if rows:
        yield list(rows)
        rows.clear()


def _list_paths(
    where: Location, paths: list[str], audio_col: str | None
) -> Iterator[list[dict[str, Any]]]:
    loose = [p for p in paths if not is_packed_name(p)]
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        for i in range(0, len(loose), PAGE_ROWS):
            chunk = loose[i : i + PAGE_ROWS]
            yield list(pool.map(lambda p: stat_row(where.uri(p), None, where), chunk))
    for p in paths:
        if is_packed_name(p):
            try:
                info = where.fs.info(p)
            except Exception as exc:
                yield [_shard_error(where.uri(p), exc)]
                continue
            yield from list_packed(where, p, info, audio_col)


def list_packed(
    where: Location, path: str, info: dict[str, Any], audio_col: str | None
) -> Iterator[list[dict[str, Any]]]:
    """The listing rows of one packed shard (`path`, in `where`'s filesystem; see the module
    docstring); a shard that cannot be opened or is not packed audio is one error row naming
    it."""
    fs, uri = where.fs, where.uri(path)
    size, version = info.get("size"), version_of(info)
    shard = {"uri": uri, "size": size, "version": version}
    if is_tar_shard(path):
        row = file_row(uri, info)
        row["packed"] = {"kind": "tar", **shard}
        yield [row]
        return
    try:
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            col = audio_column(pf.schema_arrow, audio_col)
            groups = parquet_row_groups(f)
    except Exception as exc:
        yield [_shard_error(uri, exc, info)]
        return
    if col is None:
        row = file_row(uri, info)
        row["list_error"] = {
            "kind": str(ErrorKind.UNSUPPORTED_FORMAT),
            "message": f"{uri} is a Parquet file without an audio column (a binary column or "
            "the Hugging Face Audio struct {bytes, path}); name it with audio_column",
        }
        yield [row]
        return
    start = 0
    for g, n in groups:
        rows = []
        for i in range(start, start + n):
            member = f"{uri}#{i}"
            rows.append(
                {
                    "audio_id": audio_id_for(member, size, version),
                    "uri": member,
                    "size_bytes": None,
                    "meta": None,
                    "list_error": None,
                    "packed": {"kind": "parquet", "row": i, "row_group": g, "column": col, **shard},
                }
            )
        start += n
        yield rows


def _shard_error(uri: str, exc: Exception, info: dict[str, Any] | None = None) -> dict[str, Any]:
    err = classify_os_error(exc, ErrorStage.LIST, uri)
    if not isinstance(exc, OSError):
        err.kind, err.message = ErrorKind.CORRUPT, f"{uri} cannot be read as a packed shard ({exc})"
    size = (info or {}).get("size")
    return {
        "audio_id": audio_id_for(uri, size, version_of(info or {})),
        "uri": uri,
        "size_bytes": size,
        "meta": None,
        "list_error": {"kind": str(err.kind), "message": err.message},
    }


def iter_listing(
    source: LocationLike, audio_col: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Pages of listing rows of a whole source, in this process (the job lists in tasks)."""
    source = Location.of(source)
    for unit in plan_units(source, audio_col):
        for part in expand_unit(unit, source):
            yield from list_unit(part, source, audio_col)


def list_source(source: LocationLike, audio_col: str | None = None) -> list[dict[str, Any]]:
    """Every listing row of a source in memory, sorted by URI and deduplicated: for a handful of
    files (`earmark annotate`, checks); a job streams the listing instead."""
    seen: dict[str, dict[str, Any]] = {}
    for page in iter_listing(source, audio_col):
        for r in page:
            seen.setdefault(r["audio_id"], r)  # a manifest naming a file twice yields one row
    return sorted(seen.values(), key=lambda r: r["uri"])


def list_named(paths: list[str]) -> list[dict[str, Any]]:
    """Listing rows for paths named one by one (`earmark annotate`): a folder gives its audio
    files, anything else exactly one row, an error row when it is missing or unreadable."""
    import os

    rows = []
    for path in paths:
        if os.path.isdir(path):
            rows.extend(list_source(path))
        else:
            rows.append(stat_row("file://" + os.path.abspath(path), None, None))
    return rows
