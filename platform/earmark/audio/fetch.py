"""Read one listed file and decode it, retrying transient storage errors."""

from __future__ import annotations

import time
from typing import Any

from earmark.audio.decode import DecodedAudio, decode_audio
from earmark.contracts import EarmarkError, ErrorKind, ErrorStage, LimitsSpec
from earmark.storage import classify_os_error, get_fs, is_local

RETRY_BACKOFF_S = 0.2  # first pause between read attempts; doubles each time
REMOTE_BLOCK_BYTES = 8 << 20  # read-ahead block for remote objects (fewer, larger GETs)


def read_and_decode(
    uri: str,
    size_bytes: int | None,
    limits: LimitsSpec,
    storage_options: dict[str, Any] | None = None,
    *,
    keep_samples: bool = True,
) -> DecodedAudio:
    """Decode one URI; raise EarmarkError (read or decode stage) naming what went wrong."""
    if size_bytes is not None and size_bytes > limits.max_file_bytes:
        raise EarmarkError(
            ErrorStage.READ,
            ErrorKind.TOO_LARGE,
            f"{uri} is {size_bytes} bytes, over the {limits.max_file_bytes} byte limit "
            "(limits.max_file_bytes)",
        )
    if size_bytes == 0:
        raise EarmarkError(ErrorStage.READ, ErrorKind.EMPTY_FILE, f"{uri} is empty (0 bytes)")
    attempt = 0
    while True:
        try:
            return _read_once(uri, limits, storage_options, keep_samples)
        except EarmarkError:
            raise
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            raise classify_os_error(exc, ErrorStage.READ, uri) from exc
        except Exception as exc:  # network hiccups, throttling, connection resets
            err = classify_os_error(exc, ErrorStage.READ, uri)
            if err.kind in (ErrorKind.NOT_FOUND, ErrorKind.PERMISSION_DENIED):
                raise err from exc
            if attempt >= limits.read_retries:
                err.message += f" after {attempt + 1} attempts"
                raise err from exc
            time.sleep(RETRY_BACKOFF_S * (2**attempt))
            attempt += 1


def _read_once(
    uri: str, limits: LimitsSpec, storage_options: dict[str, Any] | None, keep: bool
) -> DecodedAudio:
    fs, path = get_fs(uri, storage_options)
    if is_local(fs):
        with open(path, "rb") as f:
            return decode_audio(
                f, what=uri, max_duration_s=limits.max_duration_s, keep_samples=keep
            )
    with fs.open(path, "rb", block_size=REMOTE_BLOCK_BYTES, cache_type="readahead") as f:
        return decode_audio(f, what=uri, max_duration_s=limits.max_duration_s, keep_samples=keep)
