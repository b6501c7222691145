"""What a file's header claims (its duration, its byte rate), read before decoding: for the early
too-long refusal and the truncation check. FFmpeg clamps a WAV's data size to the file's size,
so the RIFF header is read here directly."""

from __future__ import annotations

import io
import struct
from typing import IO, Any

# A compressed header may claim any duration; one whose file is smaller than this many bytes per
# claimed second cannot hold that audio (even 8 kbit/s opus needs 1 kB/s), so the early
# too-long refusal waits for the decoded duration instead of trusting it.
MIN_PLAUSIBLE_BYTES_PER_S = 125
# RIFF data sizes that mean "length unknown" (streamed recorders: 0, 0x7FFFFFFF, 0xFFFFFFFF)
RIFF_UNKNOWN_SIZES = (0, 0x7FFFFFFF, 0xFFFFFFFF)


def header_claims(f: IO[bytes]) -> tuple[float | None, int | None, int]:
    """(seconds a WAV header claims or None, the file's size in bytes or None, the fewest
    bytes per second the file's audio can take: a WAV's byte rate, else a codec's floor)."""
    try:
        pos = f.tell()
        size = f.seek(0, io.SEEK_END)
        f.seek(pos)
    except (OSError, ValueError):
        size = None
    riff = riff_header(f)
    if riff is None:
        return None, size, MIN_PLAUSIBLE_BYTES_PER_S
    return riff[0], size, riff[1]


def declared_duration(container: Any, stream: Any) -> float | None:
    """Duration the header claims, for truncation checks and early too-long refusal."""
    if stream.duration is not None and stream.time_base is not None:
        d = float(stream.duration * stream.time_base)
        if d > 0:
            return d
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE microseconds
    return None


def riff_header(f: IO[bytes]) -> tuple[float, int] | None:
    """(seconds the data chunk claims, byte rate) of a RIFF/WAVE header; None if not a WAV.

    Sizes in RIFF_UNKNOWN_SIZES mean "unknown" (streamed WAVs) and give None too.
    """
    try:
        pos = f.tell()
        f.seek(0)
        head = f.read(1 << 16)
        f.seek(pos)
    except (OSError, ValueError):
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    i, byte_rate = 12, 0
    while i + 8 <= len(head):
        cid, size = head[i : i + 4], struct.unpack_from("<I", head, i + 4)[0]
        if cid == b"fmt " and i + 16 <= len(head):
            byte_rate = struct.unpack_from("<I", head, i + 16)[0]
        elif cid == b"data":
            if byte_rate and size not in RIFF_UNKNOWN_SIZES:
                return size / byte_rate, byte_rate
            return None
        i += 8 + size + (size & 1)
    return None
