"""Write real encoded audio files for tests (PyAV's FFmpeg encoders and libsndfile)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf

# extension/format name → (container, codec, sample format) for PyAV-encoded files
PYAV_FORMATS = {
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "opus": ("ogg", "libopus", "flt"),
    "m4a": ("ipod", "aac", "fltp"),
    "webm": ("webm", "libopus", "flt"),
    "flac": ("flac", "flac", "s16"),
}
# soundfile subtypes for WAV/OGG written by libsndfile
SF_FORMATS = {
    "wav16": ("WAV", "PCM_16"),
    "wav24": ("WAV", "PCM_24"),
    "wav32": ("WAV", "PCM_32"),
    "wavf32": ("WAV", "FLOAT"),
    "wav8": ("WAV", "PCM_U8"),
    "wavulaw": ("WAV", "ULAW"),
    "ogg": ("OGG", "VORBIS"),
}


def tone(freq: float, sr: int, seconds: float, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """(channels, samples) float32 sine."""
    t = np.arange(int(sr * seconds)) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels)


def write(path: Path, samples: np.ndarray, sr: int, fmt: str) -> Path:
    """Write (channels, n) float32 samples as `fmt` (a key of SF_FORMATS or PYAV_FORMATS)."""
    path = Path(path)
    samples = np.atleast_2d(samples).astype(np.float32)
    if fmt in SF_FORMATS:
        major, sub = SF_FORMATS[fmt]
        sf.write(str(path), samples.T, sr, format=major, subtype=sub)
        return path
    container, codec, sample_fmt = PYAV_FORMATS[fmt]
    channels = samples.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    rate = sr if codec not in ("libopus",) else 48000
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame_size = stream.codec_context.frame_size or 1024
        src = samples
        if rate != sr:  # opus only takes 48 kHz: resample by interpolation (fine for test tones)
            n = int(samples.shape[1] * rate / sr)
            xs = np.linspace(0, samples.shape[1] - 1, n)
            src = np.stack([np.interp(xs, np.arange(samples.shape[1]), c) for c in samples])
            src = src.astype(np.float32)
        for start in range(0, src.shape[1], frame_size):
            chunk = src[:, start : start + frame_size]
            if sample_fmt.endswith("p"):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(chunk), format=sample_fmt, layout=layout
                )
            elif sample_fmt == "s16":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(chunk.T.reshape(1, -1)), format=sample_fmt, layout=layout
                )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def dominant_freq(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[int(np.argmax(spec))])
