"""Storage through fsspec only: code never branches on a URL scheme.

A place is a `Location` (a URL with its storage options and its filesystem, built once;
earmark.storage.location); `get_fs` (earmark.storage.filesystem) is the one place a filesystem
is built, with S3's retry configuration.
"""

from __future__ import annotations

import errno
from typing import Any

from earmark.contracts import EarmarkError, ErrorKind, ErrorStage
from earmark.storage.filesystem import (
    S3_MAX_ATTEMPTS,
    S3_RETRY_MODE,
    S3FS_RETRIES,
    full_uri,
    get_fs,
    is_local,
    is_s3,
    s3_retry_options,
)
from earmark.storage.location import Location, LocationLike

__all__ = [
    "S3_MAX_ATTEMPTS",
    "S3_RETRY_MODE",
    "S3FS_RETRIES",
    "Location",
    "LocationLike",
    "check_writable",
    "classify_os_error",
    "full_uri",
    "get_fs",
    "is_local",
    "is_s3",
    "parse_storage_options",
    "s3_retry_options",
]


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


def check_writable(out: LocationLike) -> None:
    """Create the output location and prove it can be written; raise JobError naming the fix."""
    from earmark.contracts import JobError

    out = Location.of(out)
    try:
        fs = out.fs
        fs.makedirs(out.path, exist_ok=True)
        probe = out.join(".earmark-write-probe")
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except Exception as exc:  # any failure here is the job's, not a file's
        raise JobError(
            f"output location {out.url!r} cannot be written ({type(exc).__name__}: {exc}). "
            "Check the path exists and is writable, or the bucket name, endpoint and credentials "
            "(--storage-option key=value or AWS_* environment variables)."
        ) from exc
