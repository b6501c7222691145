"""Listing a folder or prefix as a stream of pages, never the whole listing in memory.

Local folders are walked with os.scandir, S3 prefixes page through ListObjectsV2 (through
s3fs's call_s3, so its retries apply), any other filesystem falls back to fsspec's find.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from earmark.storage import is_local, is_s3

S3_LIST_MAX_KEYS = 1000  # ListObjectsV2 returns at most 1000 keys a request


def iter_file_pages(fs: Any, path: str, *, page_size: int = 1000) -> Iterator[list[dict]]:
    """Every file under `path` (recursive), as pages of fsspec-style info dicts, yielded as
    they are found: memory holds about one page, never the whole listing.

    Each info has at least `name` (the path in `fs`'s own form, what `full_uri` takes), `size`,
    `type` and the version fields the store has (S3: ETag, LastModified; local: mtime).
    Every page holds `page_size` files but the last. A `path` that is a file is its own
    listing. Directory markers (S3 keys ending in '/') and directories are not files.

    - local: an `os.scandir` walk, directories in sorted order, each page sorted by name;
      a symlink is reported, not followed, with `islink=True` as fsspec's local info does;
      sockets, FIFOs and devices are skipped. A missing `path` raises FileNotFoundError.
    - S3: ListObjectsV2 pages with no delimiter, each request through s3fs's retries
      (an empty or missing prefix lists nothing; a missing bucket raises).
    - any other filesystem: `fs.find(path, detail=True)`, cut into pages.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, not {page_size}")
    if is_local(fs):
        infos = _local_files(fs, path)
        return (sorted(page, key=lambda i: i["name"]) for page in _paged(infos, page_size))
    if is_s3(fs):
        return _paged(_s3_files(fs, path, page_size), page_size)
    return _paged(_other_files(fs, path), page_size)


def iter_top_level(fs: Any, path: str) -> Iterator[tuple[str, dict | None]]:
    """The immediate children of a folder or prefix, streamed: a subfolder as
    (its path, None), a file as (its path, info); paths in `fs`'s own form. Meant for fanning a
    listing out over subfolders (each then listed with `iter_file_pages`).

    Local: one `os.scandir` (symlinks are files with `islink=True`, not followed). S3:
    ListObjectsV2 pages with Delimiter='/' (CommonPrefixes, then Contents); directory markers
    are skipped. Other filesystems: `fs.ls(path, detail=True)`. A `path` that is a file
    yields itself.
    """
    if is_local(fs):
        return _local_top_level(fs, path)
    if is_s3(fs):
        return _s3_top_level(fs, path)
    return _other_top_level(fs, path)


def _paged(infos: Iterable[dict], page_size: int) -> Iterator[list[dict]]:
    page: list[dict] = []
    for info in infos:
        page.append(info)
        if len(page) == page_size:
            yield page
            page = []
    if page:
        yield page


def _local_entry(fs: Any, entry: os.DirEntry) -> dict | None:
    """fsspec's info of a directory entry that is a file or a symlink, else None."""
    if not (entry.is_symlink() or entry.is_file(follow_symlinks=False)):
        return None  # a socket, FIFO or device: reading one could block forever
    return fs.info(entry)


def _local_files(fs: Any, path: str) -> Iterator[dict]:
    root = fs._strip_protocol(path)
    if not os.path.isdir(root):
        yield fs.info(root)  # a file is its own listing; a missing path raises here
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        subfolders = []
        try:
            scan = os.scandir(folder)
        except FileNotFoundError:
            if folder == root:
                raise
            continue  # removed while the walk ran
        with scan:
            for entry in scan:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subfolders.append(entry.path)
                        continue
                    info = _local_entry(fs, entry)
                except FileNotFoundError:
                    continue  # removed while the walk ran
                if info is not None:
                    yield info
        stack.extend(sorted(subfolders, reverse=True))  # popped in sorted order


def _local_top_level(fs: Any, path: str) -> Iterator[tuple[str, dict | None]]:
    root = fs._strip_protocol(path)
    if not os.path.isdir(root):
        yield root, fs.info(root)
        return
    with os.scandir(root) as scan:
        for entry in scan:
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield fs._strip_protocol(entry.path), None
                    continue
                info = _local_entry(fs, entry)
            except FileNotFoundError:
                continue
            if info is not None:
                yield info["name"], info


def _s3_prefix(fs: Any, path: str) -> tuple[str, str]:
    bucket, key, _ = fs.split_path(path)
    return bucket, (key.rstrip("/") + "/") if key else ""


def _s3_list(fs: Any, **kwargs: Any) -> Iterator[dict]:
    """ListObjectsV2 responses, one request per response, each through s3fs's retries."""
    while True:
        out = fs.call_s3("list_objects_v2", **kwargs)
        yield out
        if not out.get("IsTruncated") or not out.get("NextContinuationToken"):
            return
        kwargs["ContinuationToken"] = out["NextContinuationToken"]


def _s3_info(bucket: str, obj: dict) -> dict:
    """s3fs's info for a listed object (as `fs.find(detail=True)` gives it)."""
    name = f"{bucket}/{obj['Key']}"
    return {**obj, "Key": name, "name": name, "type": "file", "size": obj["Size"]}


def _s3_single_file(fs: Any, path: str) -> dict | None:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return info if info.get("type") == "file" else None


def _s3_files(fs: Any, path: str, page_size: int) -> Iterator[dict]:
    bucket, prefix = _s3_prefix(fs, path)
    found = False
    max_keys = min(page_size, S3_LIST_MAX_KEYS)
    for out in _s3_list(fs, Bucket=bucket, Prefix=prefix, MaxKeys=max_keys):
        for obj in out.get("Contents", []):
            if not obj["Key"].endswith("/"):  # a directory marker is not a file
                found = True
                yield _s3_info(bucket, obj)
    if not found and prefix:
        info = _s3_single_file(fs, path)
        if info is not None:
            yield info


def _s3_top_level(fs: Any, path: str) -> Iterator[tuple[str, dict | None]]:
    bucket, prefix = _s3_prefix(fs, path)
    found = False
    kwargs = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": S3_LIST_MAX_KEYS}
    for out in _s3_list(fs, **kwargs):
        for common in out.get("CommonPrefixes", []):
            found = True
            yield f"{bucket}/{common['Prefix'][:-1]}", None
        for obj in out.get("Contents", []):
            if not obj["Key"].endswith("/"):
                found = True
                info = _s3_info(bucket, obj)
                yield info["name"], info
    if not found and prefix:
        info = _s3_single_file(fs, path)
        if info is not None:
            yield info["name"], info


def _other_files(fs: Any, path: str) -> Iterator[dict]:
    for name, info in fs.find(path, detail=True).items():
        if info.get("type") != "directory" and not name.endswith("/"):
            yield info


def _other_top_level(fs: Any, path: str) -> Iterator[tuple[str, dict | None]]:
    for info in fs.ls(path, detail=True):
        if info.get("type") == "directory":
            yield info["name"], None
        elif not info["name"].endswith("/"):
            yield info["name"], info
