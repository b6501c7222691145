"""Filesystem access through fsspec only: code never branches on a URL scheme."""

from __future__ import annotations

import errno
import os
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from earmark.contracts import EarmarkError, ErrorKind, ErrorStage


def get_fs(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(filesystem, path-in-filesystem) for any fsspec URL or local path."""
    opts = dict(storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path


def full_uri(fs: Any, path: str) -> str:
    """Normalized URI of a path: `file:///abs` for local files, `proto://...` otherwise."""
    if isinstance(fs, LocalFileSystem):
        return "file://" + os.path.abspath(path)
    proto = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol
    return fs.unstrip_protocol(path) if hasattr(fs, "unstrip_protocol") else f"{proto}://{path}"


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


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
