"""Decode any audio file to mono float32 at 16 kHz, and probe what it was.

PyAV (bundled FFmpeg) decodes every container here (wav, flac, mp3, ogg/vorbis, opus, m4a/aac,
webm) with no system libraries. Decoding streams: decoded frames are gathered, as zero-copy views
of FFmpeg's buffers, into chunks of CHUNK_SAMPLES source samples; each chunk is converted to
float32, downmixed to mono, checked for NaN/inf and, when the samples are kept, resampled to
16 kHz by swresample (one stateful resampler per file, so chunking does not change its output).
Only one chunk of the multichannel source (a few MB with its float32 copies, at 8 channels) and
the mono 16 kHz result (230 MB per hour of audio) are ever held, never the whole decoded source.
Probing (`keep_samples=False`, what `earmark scan` does) skips the resampling, and for integer
sample formats (wav, flac: their values are always finite) any per-sample work at all: it only
counts the decoded samples. Work per frame is kept to a few attribute reads because short-frame
codecs (opus, vorbis, mp3) give 20-50 frames per second of audio.

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

from earmark.audio.headers import declared_duration, header_claims
from earmark.audio.samples import TARGET_SR, Chunker, Resampler, to_float32
from earmark.contracts import EarmarkError, ErrorKind, ErrorStage

__all__ = ["TARGET_SR", "DecodedAudio", "decode_audio", "to_float32"]

TRUNCATION_TOLERANCE = 0.9  # decoded/declared duration below this (and ...)
TRUNCATION_MIN_GAP_S = 0.5  # ... more than this many seconds missing) means a truncated file
# FFmpeg demuxers earmark opens (`format_whitelist`). Without a list FFmpeg probes ~300 formats,
# some of which open further inputs themselves: an uploaded SDP file makes it listen on UDP
# ports the file names, an HLS playlist or concat list fetches URLs or local paths. Every one
# of these is an audio container that reads nothing but its own bytes.
AUDIO_DEMUXERS = (
    "wav,w64,flac,mp3,ogg,matroska,mov,aac,aiff,au,caf,amr,asf,wv,ac3,eac3"  # mov: mp4/m4a
)
SUPPORTED_CONTAINERS = "wav, flac, mp3, ogg/opus, webm/mkv, mp4/m4a, aac, aiff, au, caf, amr, wma"
# Nested inputs: none at all (a protocol list that names no protocol). The file itself is read
# through Python, not through an FFmpeg protocol.
OPEN_OPTIONS = {"format_whitelist": AUDIO_DEMUXERS, "protocol_whitelist": "none"}
# Source sample rates accepted. Below 4 kHz no speech band survives, and a header claiming 1 Hz
# would turn a 2 kB upload into 1000 s of 16 kHz audio for the model; 768 kHz is the highest
# rate audio interfaces record.
MIN_SOURCE_RATE_HZ = 4_000
MAX_SOURCE_RATE_HZ = 768_000

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


def decode_audio(
    source: bytes | IO[bytes],
    *,
    what: str = "file",
    max_duration_s: float = math.inf,
    keep_samples: bool = True,
) -> DecodedAudio:
    """Decode, resample to 16 kHz and downmix one file; raise EarmarkError naming the problem.

    With `keep_samples=False` (probe) nothing is resampled and `samples` is None; every other
    field, and every error, is the same as with `keep_samples=True`.
    """
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
        container = av.open(source, mode="r", metadata_errors="ignore", options=OPEN_OPTIONS)
    except av.error.InvalidDataError as exc:
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.CORRUPT,
            f"{what} is not a readable audio file: FFmpeg found no known format ({exc})",
        ) from exc
    except av.error.ArgumentError as exc:  # a format FFmpeg knows but that is not on the list
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.UNSUPPORTED_FORMAT,
            f"{what} is not in a supported audio container ({SUPPORTED_CONTAINERS})",
        ) from exc
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise EarmarkError(
            ErrorStage.DECODE, ErrorKind.UNSUPPORTED_FORMAT, f"{what} could not be opened: {exc}"
        ) from exc
    with container:
        return _decode_container(
            container, what, max_duration_s, keep_samples, t0, *header_claims(source)
        )


def _decode_container(
    container: Any,
    what: str,
    max_duration_s: float,
    keep: bool,
    t0: float,
    riff_declared: float | None,
    file_bytes: int | None,
    min_bytes_per_s: int,
) -> DecodedAudio:
    import av

    if not container.streams.audio:
        raise EarmarkError(ErrorStage.DECODE, ErrorKind.NO_AUDIO, f"{what} has no audio stream")
    stream = container.streams.audio[0]
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:  # e.g. a WAV format tag or bit depth FFmpeg cannot decode
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.UNSUPPORTED_FORMAT,
            f"{what} has an audio stream in an encoding FFmpeg has no decoder for "
            f"({container.format.name} container)",
        )
    codec = ctx.codec.canonical_name  # "mp3", not the decoder name "mp3float"
    sr, channels = int(ctx.sample_rate or 0), int(ctx.channels or 0)
    _check_rate(sr, what)
    fmt = container.format.name
    # FFmpeg clamps a WAV's data size to the file size, so read what the header itself claims
    declared = riff_declared or declared_duration(container, stream)
    plausible = file_bytes is None or (declared or 0) * min_bytes_per_s <= file_bytes
    if declared is not None and declared > max_duration_s and plausible:
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.TOO_LONG,
            f"{what} lasts {_span(declared)}, over the {_span(max_duration_s)} limit "
            "(limits.max_duration_s)",
        )
    # Downmix first (exact, any channel count or layout), then resample one channel only.
    chunker = Chunker()
    resampler = Resampler() if keep else None
    n_source = 0
    bad = False  # a NaN or inf was seen: the file is an error row, its samples are never used
    # Integer samples are always finite, so a probe of an integer stream looks at no sample.
    # A frame in another format (codecs may switch mid-stream) is looked at as it comes.
    probe_skips = ("u8", "u8p", "s16", "s16p", "s32", "s32p", "s64", "s64p")
    limit = max_duration_s * sr if sr else math.inf

    def use(mono: np.ndarray | None) -> None:
        nonlocal bad
        if mono is None or bad:
            return
        if not np.isfinite(mono).all():
            bad = True  # later chunks are neither checked nor resampled: the file is an error
        elif resampler is not None:
            resampler.push(mono, chunker.rate)

    try:
        for frame in container.decode(stream):
            n = frame.samples
            n_source += n
            if not sr:  # the header had no rate: take the first frame's
                sr = frame.sample_rate
                _check_rate(sr, what)
                limit = max_duration_s * sr if sr else math.inf
            if n_source > limit:
                raise EarmarkError(
                    ErrorStage.DECODE,
                    ErrorKind.TOO_LONG,
                    f"{what} is longer than the {_span(max_duration_s)} limit "
                    "(limits.max_duration_s)",
                )
            channels = channels or frame.layout.nb_channels
            if bad or (resampler is None and frame.format.name in probe_skips):
                continue
            use(chunker.add(frame, n))
        use(chunker.flush())
        samples = resampler.finish() if resampler is not None and not bad else None
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
    return DecodedAudio(
        samples=samples,
        duration_s=duration,
        source_sample_rate=sr,
        source_channels=channels,
        codec=codec,
        container=fmt,
        decode_s=time.perf_counter() - t0,
    )


def _span(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"


def _check_rate(sr: int, what: str) -> None:
    if sr and not MIN_SOURCE_RATE_HZ <= sr <= MAX_SOURCE_RATE_HZ:
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.UNSUPPORTED_FORMAT,
            f"{what} has a sample rate of {sr} Hz; earmark reads {MIN_SOURCE_RATE_HZ} to "
            f"{MAX_SOURCE_RATE_HZ} Hz",
        )
