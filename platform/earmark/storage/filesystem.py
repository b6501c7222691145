"""Filesystems: the one place one is built (`get_fs`), and S3's retry configuration.

Where a filesystem needs tuning (S3's retries) the choice is made on the filesystem class that
fsspec resolves for the URL, never on the scheme's spelling. Code elsewhere reaches a filesystem
through a `Location` (earmark.storage.location), which calls `get_fs` once.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

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


def is_s3(fs: Any) -> bool:
    return _is_s3_class(type(fs))


def _urlis_s3(url: str) -> bool:
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
    opts = s3_retry_options(storage_options) if _urlis_s3(url) else dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **opts)
    if is_s3(fs):
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
