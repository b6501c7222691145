"""Filesystem access through fsspec only: code never branches on a URL scheme.

Where a filesystem needs tuning (S3's retries) the choice is made on the filesystem class that
fsspec resolves for the URL, never on the scheme's spelling.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from earmark.contracts import EarmarkError, ErrorKind, ErrorStage

# Throttling and transient errors from S3 (503 SlowDown, 500/502/504, RequestTimeout, connection
# resets, 429) are retried at two layers, and their attempts multiply:
#
# 1. botocore retries each HTTP request. Its "standard" mode (botocore/retries/standard.py)
#    retries status 500/502/503/504, the throttling codes (SlowDown, Throttling, ...), the
#    RequestTimeout code and connection errors (ConnectionError, HTTPClientError), sleeping
#    rand(0, 1) * min(2 ** (attempt - 1), 20) seconds: exponential, jittered, capped at 20 s.
#    A per-client retry quota stops retrying while most requests fail (a circuit breaker).
#    botocore's default here, "legacy" (botocore/data/_retry.json), matches by status code
#    only (so SlowDown/RequestTimeout only under 503/400), does not retry a generic
#    HTTPClientError and never caps its backoff (rand * 2 ** n). `total_max_attempts` counts
#    the first request; the `max_attempts` key counts retries only (botocore/args.py).
# 2. s3fs wraps every call in its own loop (s3fs/core.py `_error_wrapper`, S3FileSystem.retries
#    times, sleeping min(1.7 ** i * 0.1, 15) s): it retries SlowDown errors botocore gave up on,
#    truncated bodies (IncompleteRead, ClientPayloadError) that botocore never sees, timeouts,
#    and whatever s3fs's custom error handler accepts. Standard mode does not retry a bare
#    HTTP 429 (no throttling code in the body; some S3-compatible stores send one), so a 429 is
#    handed to this loop through that handler (`_retry_http_429`).
#
# Together at most S3FS_RETRIES * S3_MAX_ATTEMPTS = 20 HTTP requests per call, with botocore
# sleeping at most 1+2+4+8 = 15 s a round (7.5 s on average): a call rides out about a minute
# of throttling. An unreachable endpoint (EndpointConnectionError) is retried by botocore only,
# so a wrong endpoint still fails within 15 s, as with botocore's legacy default of 5 attempts.
# A user's own `config_kwargs.retries` replaces layer 1 whole; layer 2 stays bounded.
# (earmark's own read retry, LimitsSpec.read_retries in audio/fetch.py, wraps audio reads.)
S3_RETRY_MODE = "standard"
S3_MAX_ATTEMPTS = 5  # botocore attempts per HTTP request, the first included (standard's: 3)
S3FS_RETRIES = 4  # s3fs attempts per call (its default is 5), each a full botocore round
S3_LIST_MAX_KEYS = 1000  # ListObjectsV2 returns at most 1000 keys a request


def s3_retry_options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """`storage_options` with earmark's botocore retry config merged into `config_kwargs`,
    unless the user gave `config_kwargs.retries` (theirs is used as given). Never mutates."""
    opts = dict(storage_options or {})
    config = dict(opts.get("config_kwargs") or {})
    if "retries" not in config:
        config["retries"] = {"mode": S3_RETRY_MODE, "total_max_attempts": S3_MAX_ATTEMPTS}
        opts["config_kwargs"] = config
    return opts


def _is_s3_class(cls: Any) -> bool:
    try:
        from s3fs import S3FileSystem
    except ImportError:  # s3fs not installed: nothing here is S3
        return False
    return isinstance(cls, type) and issubclass(cls, S3FileSystem)


def _is_s3(fs: Any) -> bool:
    return _is_s3_class(type(fs))


def _url_is_s3(url: str) -> bool:
    try:
        cls = fsspec.get_filesystem_class(fsspec.utils.get_protocol(url))
    except (ValueError, ImportError):  # unknown protocol: url_to_fs will say so
        return False
    return _is_s3_class(cls)


_handler_lock = threading.Lock()


def _is_http_429(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 429


def _retry_http_429() -> None:
    """Make s3fs's retry loop take HTTP 429 (see the constants above), once per process,
    keeping any handler installed before (s3fs has one process-wide handler)."""
    import s3fs.core

    with _handler_lock:
        previous = s3fs.core.CUSTOM_ERROR_HANDLER
        if getattr(previous, "earmark_http_429", False):
            return

        def handler(exc: BaseException) -> bool:
            return _is_http_429(exc) or bool(previous(exc))

        handler.earmark_http_429 = True  # type: ignore[attr-defined]
        s3fs.core.set_custom_error_handler(handler)


def get_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(filesystem, path-in-filesystem) for any fsspec URL or local path.

    An S3 filesystem retries throttling and transient errors with backoff (see S3_RETRY_MODE).
    """
    opts = s3_retry_options(storage_options) if _url_is_s3(url) else dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **opts)
    if _is_s3(fs):
        fs.retries = S3FS_RETRIES  # an instance attribute: s3fs takes no such argument
        _retry_http_429()
    return fs, path


def full_uri(fs: Any, path: str) -> str:
    """Normalized URI of a path: `file:///abs` for local files, `proto://...` otherwise."""
    if isinstance(fs, LocalFileSystem):
        return "file://" + os.path.abspath(path)
    proto = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    return fs.unstrip_protocol(path) if hasattr(fs, "unstrip_protocol") else f"{proto}://{path}"


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


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
    if _is_s3(fs):
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
    if _is_s3(fs):
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


def parse_storage_options(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs from the CLI; values true/false/ints become Python values.

    A dotted key nests: `client_kwargs.region_name=us-east-1` → {"client_kwargs": {...}}.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"storage option {item!r} must be written key=value")
        key, value = item.split("=", 1)
        parsed: Any = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        elif value.isdigit():
            parsed = int(value)
        target = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ValueError(f"storage option {item!r}: {p!r} was already given a value")
        if isinstance(target.get(leaf), dict):
            raise ValueError(f"storage option {item!r}: {leaf!r} already holds nested options")
        target[leaf] = parsed
    return out


def classify_os_error(exc: BaseException, stage: ErrorStage, what: str) -> EarmarkError:
    """Map a filesystem exception onto the error taxonomy with a readable message."""
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in low or "not found" in low:
        kind = ErrorKind.NOT_FOUND
        msg = f"{what} does not exist"
    elif (
        isinstance(exc, PermissionError)
        or getattr(exc, "errno", None) == errno.EACCES
        or "accessdenied" in low
        or "forbidden" in low
        or "403" in low
    ):
        kind = ErrorKind.PERMISSION_DENIED
        msg = f"permission denied reading {what}"
    elif isinstance(exc, IsADirectoryError):
        kind = ErrorKind.UNSUPPORTED_FORMAT
        msg = f"{what} is a directory, not an audio file"
    else:
        kind = ErrorKind.UNREACHABLE
        msg = f"could not read {what}"
    return EarmarkError(stage, kind, f"{msg} ({text})")


def check_writable(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Create the output location and prove it can be written; raise JobError naming the fix."""
    from earmark.contracts import JobError

    try:
        fs, path = get_fs(url, storage_options)
        fs.makedirs(path, exist_ok=True)
        probe = f"{path.rstrip('/')}/.earmark-write-probe"
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as exc:  # any failure here is the job's, not a file's
        raise JobError(
            f"output location {url!r} cannot be written ({type(exc).__name__}: {exc}). "
            "Check the path exists and is writable, or the bucket name, endpoint and credentials "
            "(--storage-option key=value or AWS_* environment variables)."
        ) from exc
