"""Decode any audio file to mono float32 at 16 kHz, and probe what it was.

PyAV (bundled FFmpeg) decodes every container here (wav, flac, mp3, ogg/vorbis, opus, m4a/aac,
webm) with no system libraries. Decoding streams frame by frame: each frame is resampled to
16 kHz by swresample with its channel layout unchanged, then downmixed, so only the mono 16 kHz
result is ever held in memory (230 MB per hour of audio), never the multichannel source.

Downmix rule: the plain arithmetic mean of all channels, equal weights (no -3 dB pan law, no LFE
special case). It keeps a signal present in all channels at its level and halves one present in
only one of two channels; it is what the Eureka and MOSS references do (channel mean).
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from earmark.schemas import EarmarkError, ErrorKind, ErrorStage

TARGET_SR = 16_000  # Hz, what every model consumes
TRUNCATION_TOLERANCE = 0.9  # decoded/declared duration below this (and ...)
TRUNCATION_MIN_GAP_S = 0.5  # ... more than this many seconds missing) means a truncated file

_av_quiet = False


def _quiet_ffmpeg() -> None:
    global _av_quiet
    if not _av_quiet:
        import av.logging

        av.logging.set_level(av.logging.PANIC)  # corrupt input is reported as row values instead
        _av_quiet = True


@dataclass
class DecodedAudio:
    samples: np.ndarray | None  # mono float32 at TARGET_SR; None when not kept (probe only)
    duration_s: float  # from decoded source samples, not from the header
    source_sample_rate: int
    source_channels: int
    codec: str
    container: str
    decode_s: float  # wall seconds spent here


# integer sample formats → divisor that maps them onto [-1, 1); unsigned 8-bit is offset by 128
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9.223372036854776e18}


def frame_to_planar(frame: Any) -> np.ndarray:
    """(channels, samples) float32 from any PyAV audio frame, packed or planar, int or float.

    Packed frames come out of `to_ndarray()` interleaved as (1, samples*channels).
    """
    fmt = frame.format.name
    base = fmt.rstrip("p")
    channels = frame.layout.nb_channels
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if base == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    if base in _INT_SCALE:
        return (arr / _INT_SCALE[base]).astype(np.float32)
    return arr.astype(np.float32, copy=False)


def downmix(planar: np.ndarray) -> np.ndarray:
    """Channel mean of a (channels, samples) array → (samples,) float32."""
    if planar.ndim == 1:
        return planar.astype(np.float32, copy=False)
    return planar.mean(axis=0, dtype=np.float32)


def decode_audio(
    source: bytes | IO[bytes],
    *,
    what: str = "file",
    max_duration_s: float = math.inf,
    keep_samples: bool = True,
) -> DecodedAudio:
    """Decode, resample to 16 kHz and downmix one file; raise EarmarkError naming the problem."""
    import av

    _quiet_ffmpeg()
    t0 = time.perf_counter()
    if isinstance(source, bytes | bytearray):
        if len(source) == 0:
            raise EarmarkError(
                ErrorStage.DECODE, ErrorKind.EMPTY_FILE, f"{what} is empty (0 bytes)"
            )
        source = io.BytesIO(source)
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.CORRUPT,
            f"{what} is not a readable audio file: FFmpeg found no known format ({exc})",
        ) from exc
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise EarmarkError(
            ErrorStage.DECODE, ErrorKind.UNSUPPORTED_FORMAT, f"{what} could not be opened: {exc}"
        ) from exc
    with container:
        return _decode_container(
            container, what, max_duration_s, keep_samples, t0, riff_declared_duration(source)
        )


def _decode_container(
    container: Any,
    what: str,
    max_duration_s: float,
    keep: bool,
    t0: float,
    riff_declared: float | None,
) -> DecodedAudio:
    import av

    if not container.streams.audio:
        raise EarmarkError(ErrorStage.DECODE, ErrorKind.NO_AUDIO, f"{what} has no audio stream")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    codec = ctx.codec.canonical_name  # "mp3", not the decoder name "mp3float"
    sr, channels = int(ctx.sample_rate or 0), int(ctx.channels or 0)
    fmt = container.format.name
    # FFmpeg clamps a WAV's data size to the file size, so read what the header itself claims
    declared = riff_declared or _declared_duration(container, stream)
    if declared is not None and declared > max_duration_s:
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.TOO_LONG,
            f"{what} lasts {declared / 3600:.2f} h, over the {max_duration_s / 3600:.2f} h limit "
            "(limits.max_duration_s)",
        )
    # Downmix first (exact, any channel count or layout), then resample one channel only.
    resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_SR)
    chunks: list[np.ndarray] = []
    n_source = 0
    bad = False

    def emit(frames: list[Any]) -> None:
        nonlocal bad
        for out in frames:
            mono = out.to_ndarray().reshape(-1)
            bad = bad or not np.isfinite(mono).all()
            if keep:
                chunks.append(mono.astype(np.float32, copy=False))

    try:
        for frame in container.decode(stream):
            sr = sr or frame.sample_rate
            channels = channels or frame.layout.nb_channels
            n_source += frame.samples
            if sr and n_source / sr > max_duration_s:
                raise EarmarkError(
                    ErrorStage.DECODE,
                    ErrorKind.TOO_LONG,
                    f"{what} is longer than the {max_duration_s:.0f} s limit "
                    "(limits.max_duration_s)",
                )
            mono = downmix(frame_to_planar(frame))
            if not np.isfinite(mono).all():
                bad = True
                mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
            if not keep:
                continue  # probe only: the duration and the finiteness check need no resampling
            mono_frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
            mono_frame.sample_rate = frame.sample_rate
            mono_frame.pts = None
            emit(resampler.resample(mono_frame))
        if keep:
            emit(resampler.resample(None))
    except EarmarkError:
        raise
    except (av.error.FFmpegError, ValueError) as exc:
        got = n_source / sr if sr else 0.0
        kind = ErrorKind.TRUNCATED if n_source else ErrorKind.CORRUPT
        of = f" of the {declared:.2f} s its header declares" if declared else ""
        state = "is truncated or damaged" if n_source else "is damaged"
        raise EarmarkError(
            ErrorStage.DECODE,
            kind,
            f"{what} {state}: decoding failed after {got:.2f} s{of} ({exc})",
        ) from exc
    if n_source == 0 or sr == 0:
        raise EarmarkError(
            ErrorStage.DECODE, ErrorKind.NO_AUDIO, f"{what} holds no audio samples (0 decoded)"
        )
    duration = n_source / sr
    if bad:
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.NON_FINITE,
            f"{what} contains NaN or infinite sample values ({codec}); the file is damaged",
        )
    if (
        declared is not None
        and duration < TRUNCATION_TOLERANCE * declared
        and declared - duration > TRUNCATION_MIN_GAP_S
    ):
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.TRUNCATED,
            f"{what} is truncated: {duration:.2f} s decoded of the {declared:.2f} s its header "
            "declares",
        )
    samples = None
    if keep:
        samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return DecodedAudio(
        samples=samples,
        duration_s=duration,
        source_sample_rate=sr,
        source_channels=channels,
        codec=codec,
        container=fmt,
        decode_s=time.perf_counter() - t0,
    )


def _declared_duration(container: Any, stream: Any) -> float | None:
    """Duration the header claims, for truncation checks and early too-long refusal."""
    if stream.duration is not None and stream.time_base is not None:
        d = float(stream.duration * stream.time_base)
        if d > 0:
            return d
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE microseconds
    return None


def riff_declared_duration(f: IO[bytes]) -> float | None:
    """Seconds a RIFF/WAVE header claims (data chunk size / byte rate); None if not a WAV.

    Sizes of 0 or 0xFFFFFFFF mean "unknown" (streamed WAVs) and are ignored.
    """
    import struct

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
            if byte_rate and 0 < size < 0xFFFFFFFF:
                return size / byte_rate
            return None
        i += 8 + size + (size & 1)
    return None
