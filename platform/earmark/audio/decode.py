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

from earmark.contracts import EarmarkError, ErrorKind, ErrorStage

TARGET_SR = 16_000  # Hz, what every model consumes
TRUNCATION_TOLERANCE = 0.9  # decoded/declared duration below this (and ...)
TRUNCATION_MIN_GAP_S = 0.5  # ... more than this many seconds missing) means a truncated file
# Source samples (per channel) converted, downmixed and resampled together. Per-frame numpy and
# swresample calls cost more than decoding short-frame codecs; 64 Ki samples (1.4-4 s of audio,
# 2 MB as float32 at 8 channels) amortise them and stay cache-friendly.
CHUNK_SAMPLES = 1 << 16
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
# A compressed header may claim any duration; one whose file is smaller than this many bytes per
# claimed second cannot hold that audio (even 8 kbit/s opus needs 1 kB/s), so the early
# too-long refusal waits for the decoded duration instead of trusting it.
MIN_PLAUSIBLE_BYTES_PER_S = 125
# RIFF data sizes that mean "length unknown" (streamed recorders: 0, 0x7FFFFFFF, 0xFFFFFFFF)
RIFF_UNKNOWN_SIZES = (0, 0x7FFFFFFF, 0xFFFFFFFF)

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
# sample format (without the planar "p") → numpy dtype of its buffers
_DTYPES = {
    "u8": np.dtype(np.uint8),
    "s16": np.dtype(np.int16),
    "s32": np.dtype(np.int32),
    "s64": np.dtype(np.int64),
    "flt": np.dtype(np.float32),
    "dbl": np.dtype(np.float64),
}


def to_float32(arr: np.ndarray, base: str) -> np.ndarray:
    """Samples of sample format `base` ("s16", "flt", ...) as float32 in [-1, 1).

    Integer scales are powers of two, so scaling after the cast equals scaling before it.
    """
    if base == "u8":
        return (arr.astype(np.float32) - 128.0) / 128.0
    if base in _INT_SCALE:
        out = arr.astype(np.float32)
        out *= np.float32(1.0 / _INT_SCALE[base])
        return out
    return arr.astype(np.float32, copy=False)


class _Chunker:
    """Decoded frames → mono float32 chunks at the source rate (see the module docstring).

    `add` keeps zero-copy views of a frame's sample buffers (each view keeps its frame alive)
    and returns a mono chunk once CHUNK_SAMPLES are pending; a frame whose sample format,
    channel count or rate differs from the pending ones first flushes those, so every chunk is
    uniform. `rate` is the source rate of the chunk returned last.
    """

    def __init__(self) -> None:
        self.key: tuple[str, int, int] | None = None  # (format name, channels, rate) pending
        self.parts: list[list[np.ndarray]] = []  # per buffer (plane): views, frame by frame
        self.count = 1  # values per buffer per sample: the channels if packed, else 1
        self.dtype = _DTYPES["flt"]
        self.pending = 0  # samples per channel pending
        self.rate = 0

    def add(self, frame: Any, n: int) -> np.ndarray | None:
        fmt = frame.format
        key = (fmt.name, frame.layout.nb_channels, frame.sample_rate)
        out = None
        if key != self.key:
            out = self.flush()
            planar = fmt.is_planar and key[1] > 1
            self.key, self.dtype = key, _DTYPES[key[0].rstrip("p")]
            self.parts = [[] for _ in range(key[1] if planar else 1)]
            self.count = 1 if planar else key[1]
        count = n * self.count
        for part, plane in zip(self.parts, frame.planes, strict=False):
            part.append(np.frombuffer(plane, self.dtype, count))
        self.pending += n
        if out is None and self.pending >= CHUNK_SAMPLES:
            out = self.flush()
        return out

    def flush(self) -> np.ndarray | None:
        """The pending samples as one mono float32 chunk (None when nothing is pending)."""
        if self.key is None or not self.pending:
            return None
        name, channels, self.rate = self.key
        base = name.rstrip("p")
        parts, self.pending = self.parts, 0
        self.parts = [[] for _ in parts]
        planes = [np.concatenate(p) if len(p) > 1 else p[0] for p in parts]
        if len(planes) == 1 and channels > 1:  # packed: strided views, one per channel
            planes = [planes[0][c::channels] for c in range(channels)]
        acc = to_float32(planes[0], base)
        if channels == 1:
            return acc
        # Running float32 sum, then divide: what mean(axis=0, dtype=float32) computes, without
        # its slow reduction over a short axis for packed (interleaved) samples.
        if acc is planes[0]:  # a view (of a decoder buffer, or strided): never write into it
            acc = acc.copy()
        for p in planes[1:]:
            acc += to_float32(p, base)
        acc /= np.float32(channels)
        return acc


class _Resampler:
    """Mono float32 chunks at the source rate → mono float32 at TARGET_SR, kept in order.

    One swresample context per file (stateful: the output does not depend on how the input is
    cut into chunks); none at all when the source is already at TARGET_SR. A sample rate change
    mid-stream raises ValueError, as PyAV's resampler does.
    """

    def __init__(self) -> None:
        self.resampler: Any = None
        self.rate = 0
        self.out: list[np.ndarray] = []

    def push(self, mono: np.ndarray, rate: int) -> None:
        import av

        if self.rate and rate != self.rate:
            raise ValueError(f"sample rate changed mid-stream ({self.rate} → {rate} Hz)")
        self.rate = rate
        if rate == TARGET_SR:
            self.out.append(mono)
            return
        if self.resampler is None:
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=TARGET_SR)
        frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = None
        self._take(self.resampler.resample(frame))

    def finish(self) -> np.ndarray:
        if self.resampler is not None:
            self._take(self.resampler.resample(None))
        if not self.out:
            return np.zeros(0, np.float32)
        return np.concatenate(self.out)  # always a fresh, writable array

    def _take(self, frames: list[Any]) -> None:
        for f in frames:  # views: each keeps its frame's buffer alive until `finish` copies it
            self.out.append(f.to_ndarray().reshape(-1))


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
            container, what, max_duration_s, keep_samples, t0, *_header_claims(source)
        )


def _header_claims(f: IO[bytes]) -> tuple[float | None, int | None, int]:
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
    declared = riff_declared or _declared_duration(container, stream)
    plausible = file_bytes is None or (declared or 0) * min_bytes_per_s <= file_bytes
    if declared is not None and declared > max_duration_s and plausible:
        raise EarmarkError(
            ErrorStage.DECODE,
            ErrorKind.TOO_LONG,
            f"{what} lasts {_span(declared)}, over the {_span(max_duration_s)} limit "
            "(limits.max_duration_s)",
        )
    # Downmix first (exact, any channel count or layout), then resample one channel only.
    chunker = _Chunker()
    resampler = _Resampler() if keep else None
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


def _declared_duration(container: Any, stream: Any) -> float | None:
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
            if byte_rate and size not in RIFF_UNKNOWN_SIZES:
                return size / byte_rate, byte_rate
            return None
        i += 8 + size + (size & 1)
    return None
