"""Long-audio windowing: split decoded audio into model windows, cutting in pauses.

A file that fits one model window stays whole. A longer one is cut greedily from the start: each
cut is searched in the last part of the allowed window (between `MIN_WINDOW_FRACTION` and 1 of
`max_window_s`) and placed, in order of preference,

1. in the longest pause between speech regions that silero-vad finds in that search region,
2. at the quietest stretch (short-time energy) when the VAD sees no speech or no pause there,
   provided it is clearly quieter than the rest of the region,
3. at the window limit (a hard cut) when there is no pause at all (continuous music, noise).

Windows cover the audio in order, without gaps or overlap, and none is longer than the limit.
The silero-vad model ships in its package (no download); it is loaded once per process, lazily.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from earmark.audio.windows import SAMPLE_RATE, Window, WindowPreparer

MIN_WINDOW_FRACTION = 0.5  # a cut is searched in [0.5, 1.0] × max window: windows ≥ half the limit
ENERGY_FRAME_S = 0.010  # s: short-time energy frame
ENERGY_SMOOTH_S = 0.100  # s: a pause must be quiet over this span, not one quiet frame
ENERGY_PAUSE_RATIO = 0.1  # quietest span must be ≤ 10 % (−10 dB power) of the region median...
SILENCE_RMS = 1e-4  # ...or below this absolute RMS (≈ −80 dBFS: digital silence)
QUIET_RUN_FACTOR = 2.0  # spans within 2× (3 dB) of the quietest count as the same pause
VAD_SAMPLE_RATES = (8_000, 16_000)  # Hz: the rates silero-vad accepts
VAD_THRESHOLD = 0.5  # silero speech probability threshold (its default)

VadMode = Literal["silero", "energy", "none"]
# (samples, sr) -> speech regions [(start, end)] in samples; lets tests inject a fake VAD
SpeechFn = Callable[[np.ndarray, int], Sequence[tuple[int, int]]]

_vad_lock = threading.Lock()
_vad_model: Any = None


def _silero_model() -> Any:
    """The silero-vad model, loaded on first use and cached for the process.

    The ONNX build runs single-threaded and ≈3× faster than the TorchScript one here (≈90–130×
    realtime vs ≈37× on one core, and the TorchScript one collapses when cores are contended);
    TorchScript is the fallback when onnxruntime is missing.
    """
    global _vad_model
    with _vad_lock:
        if _vad_model is None:
            from silero_vad import load_silero_vad

            try:
                import onnxruntime  # noqa: F401

                _vad_model = load_silero_vad(onnx=True)
            except ImportError:
                _vad_model = load_silero_vad()
        return _vad_model


def silero_speech(samples: np.ndarray, sr: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Speech regions [(start, end)] in samples, found by silero-vad."""
    import torch
    from silero_vad import get_speech_timestamps

    model = _silero_model()
    with _vad_lock, torch.inference_mode():  # the model object keeps recurrent state
        stamps = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)),
            model,
            threshold=VAD_THRESHOLD,
            sampling_rate=sr,
        )
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def plan_windows(
    samples: np.ndarray,
    sr: int = SAMPLE_RATE,
    max_window_s: float = 30.0,
    vad: VadMode | SpeechFn = "silero",
    regions: Sequence[tuple[int, int]] | None = None,
) -> list[tuple[int, int]]:
    """Window bounds [(start_sample, end_sample)] covering `samples` in order.

    vad: "silero" (pauses from silero-vad, energy fallback), "energy" (energy only), "none"
    (hard cuts every `max_window_s`), or a function returning speech regions. `regions`: speech
    regions already found over all of `samples` (then no VAD runs here).
    """
    n = int(len(samples))
    max_len = int(max_window_s * sr)
    if max_len <= 0:
        raise ValueError(f"max_window_s must be positive, got {max_window_s}")
    if n == 0:
        return []
    if n <= max_len:
        return [(0, n)]
    if vad == "none":
        return [(s, min(s + max_len, n)) for s in range(0, n, max_len)]
    speech_at = _speech_at(samples, sr, vad) if regions is None else _clipper(regions)
    bounds: list[tuple[int, int]] = []
    start = 0
    while n - start > max_len:
        cut = find_cut(samples, start, max_len, sr, speech_at)
        bounds.append((start, cut))
        start = cut
    bounds.append((start, n))
    return bounds


# (lo, hi) -> speech regions inside samples[lo:hi], relative to lo
SpeechAt = Callable[[int, int], Sequence[tuple[int, int]]]


def clip_regions(regions: Sequence[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of speech regions (file samples) inside [lo, hi), in samples from `lo`."""
    return [(max(s, lo) - lo, min(e, hi) - lo) for s, e in regions if s < hi and e > lo]


def _clipper(regions: Sequence[tuple[int, int]]) -> SpeechAt:
    """Speech inside a stretch of the file, from regions found over the whole file."""
    return lambda lo, hi: clip_regions(regions, lo, hi)


def _speech_at(samples: np.ndarray, sr: int, vad: VadMode | SpeechFn) -> SpeechAt | None:
    """Speech inside a stretch of the file, found by running the VAD on that stretch."""
    fn = _speech_fn(vad, sr)
    return None if fn is None else (lambda lo, hi: fn(samples[lo:hi], sr))


def _speech_fn(vad: VadMode | SpeechFn, sr: int) -> SpeechFn | None:
    if callable(vad):
        return vad
    if vad == "silero":
        return silero_speech if sr in VAD_SAMPLE_RATES else None
    if vad == "energy":
        return None
    raise ValueError(f"unknown vad mode {vad!r}: use 'silero', 'energy' or 'none'")


def find_cut(
    samples: np.ndarray,
    start: int,
    max_len: int,
    sr: int,
    speech_at: SpeechAt | None,
) -> int:
    """Where the window beginning at `start` ends: a sample in (start, start + max_len]."""
    lo = start + max(1, int(max_len * MIN_WINDOW_FRACTION))
    hi = start + max_len
    region = samples[lo:hi]
    if speech_at is not None:
        speech = list(speech_at(lo, hi))
        if speech:  # no speech at all: the VAD says nothing about where to cut, use energy
            cut = _longest_pause(speech, len(region))
            if cut is not None:
                return lo + cut
    cut = _quietest_point(region, sr)
    return hi if cut is None else lo + cut


def _longest_pause(speech: Sequence[tuple[int, int]], length: int) -> int | None:
    """Middle of the longest gap between (or around) speech regions, None when there is none."""
    gaps: list[tuple[int, int]] = []
    prev_end = 0
    for s, e in sorted(speech):
        if s > prev_end:
            gaps.append((prev_end, s))
        prev_end = max(prev_end, e)
    if prev_end < length:
        gaps.append((prev_end, length))
    if not gaps:
        return None
    s, e = max(gaps, key=lambda g: (g[1] - g[0], g[0]))  # longest; the later one wins a tie
    # the middle, not an edge: VAD edges are ±30 ms and a short word onset may be dropped
    return (s + e) // 2


def _quietest_point(region: np.ndarray, sr: int) -> int | None:
    """Middle of the longest quiet run around the quietest span, None when nothing is quiet."""
    frame = max(1, int(ENERGY_FRAME_S * sr))
    n_frames = len(region) // frame
    if n_frames == 0:
        return None
    frames = region[: n_frames * frame].astype(np.float64).reshape(n_frames, frame)
    power = np.mean(frames**2, axis=1)
    k = max(1, min(n_frames, int(round(ENERGY_SMOOTH_S / ENERGY_FRAME_S))))
    smooth = np.convolve(power, np.ones(k) / k, mode="valid")  # mean power of each k-frame span
    quiet = float(smooth.min())
    if not (quiet <= ENERGY_PAUSE_RATIO * float(np.median(power)) or quiet <= SILENCE_RMS**2):
        return None
    # every span about as quiet as the quietest one; cut in the middle of the longest such run
    mask = smooth <= max(QUIET_RUN_FACTOR * quiet, SILENCE_RMS**2)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    runs = list(zip(edges[::2], edges[1::2], strict=True))  # [start, end) in span indices
    r0, r1 = max(runs, key=lambda r: (r[1] - r[0], r[0]))
    return int(((r0 + r1 - 1) / 2 + k / 2) * frame)


def make_windows(
    audio_id: str,
    samples: np.ndarray,
    model_cls: WindowPreparer,
    *,
    max_window_s: float | None = None,
    vad: VadMode | SpeechFn = "silero",
) -> list[Window]:
    """Model windows of one file's 16 kHz samples, features prepared by `model_cls.prepare`.

    With silero, the VAD runs once over the whole file: its regions place the cuts and give each
    window its seconds of speech (`Window.speech_s`, read by the Annotator's speech gate)."""
    limit = model_cls.info.window_s if max_window_s is None else max_window_s
    regions: list[tuple[int, int]] | None = None
    if vad == "silero" or callable(vad):
        fn = silero_speech if vad == "silero" else vad
        regions = sorted(fn(samples, SAMPLE_RATE)) if len(samples) else []
    windows = []
    for i, (s, e) in enumerate(plan_windows(samples, SAMPLE_RATE, limit, vad, regions)):
        chunk = samples[s:e]
        speech = None
        if regions is not None:
            speech = tuple(
                (a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in clip_regions(regions, s, e)
            )
        windows.append(
            Window(
                audio_id=audio_id,
                index=i,
                start_s=s / SAMPLE_RATE,
                end_s=e / SAMPLE_RATE,
                num_samples=e - s,
                features=model_cls.prepare(chunk),
                speech=speech,
            )
        )
    return windows
