"""Decoded frames → mono float32 at 16 kHz, chunk by chunk (what `decode_audio` does with the
samples FFmpeg hands it; see earmark.audio.decode for the downmix rule).

Frames are gathered as zero-copy views of FFmpeg's buffers into chunks of CHUNK_SAMPLES source
samples; each chunk is converted to float32 and downmixed to mono (the plain channel mean), and
then resampled by one stateful swresample context per file, so chunking does not change the
output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TARGET_SR = 16_000  # Hz, what every model consumes
# Source samples (per channel) converted, downmixed and resampled together. Per-frame numpy and
# swresample calls cost more than decoding short-frame codecs; 64 Ki samples (1.4-4 s of audio,
# 2 MB as float32 at 8 channels) amortise them and stay cache-friendly.
CHUNK_SAMPLES = 1 << 16

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


class Chunker:
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


class Resampler:
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
