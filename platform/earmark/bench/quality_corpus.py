"""Corpora of the quality benchmark: non-speech clips of many kinds, and long speech files with
known sentence times, generated (seeded) so every run measures the same audio.

Non-speech kinds (what archives hold between and instead of speech): white, pink, brown and
blue noise; steady tones; sine sweeps; music-like chord progressions with harmonics and note
envelopes; a drum-like pulse; digital silence; click trains; room tone (quiet low-passed noise
with mains hum); and phone ringing. Durations are drawn log-uniformly in [1, 60] s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SR = 16_000  # Hz: clips are written at the models' rate (decoding is not what this measures)
MIN_S, MAX_S = 1.0, 60.0  # s: clip lengths
KINDS = (
    "white",
    "pink",
    "brown",
    "blue",
    "tone",
    "sweep",
    "chords",
    "drums",
    "silence",
    "clicks",
    "room",
    "ring",
)
LEVEL_DBFS = (-30.0, -6.0)  # range of clip RMS levels, dBFS
ROOM_DBFS = -55.0  # room tone level, dBFS
HUM_HZ = (50.0, 60.0)  # mains hum
NOTE_S = (0.25, 0.8)  # music: note lengths, s
SPEECH_GAP_S = (0.6, 2.5)  # s of silence between sentences in the long speech files
ONSET_LEVEL = 1e-3  # |sample| above this (-60 dBFS) is sound: the demo clips are clean TTS


def _coloured(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power ∝ f^exponent (0 white, -1 pink, -2 brown, +1 blue)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1] if n > 1 else 1.0
    return np.fft.irfft(spec * f ** (exponent / 2), n)


def _envelope(n: int, attack_s: float = 0.01, release_s: float = 0.1) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n, int(attack_s * SR)), min(n, int(release_s * SR))
    if a:
        env[:a] = np.linspace(0, 1, a)
    if r:
        env[-r:] *= np.linspace(1, 0, r)
    return env


def _chords(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    t = 0
    while t < n:
        length = min(n - t, int(rng.uniform(*NOTE_S) * SR))
        root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        tt = np.arange(length) / SR
        note = sum(
            (0.5**h) * np.sin(2 * np.pi * root * ratio * (h + 1) * tt)
            for ratio in (1.0, 1.26, 1.5)  # a major triad
            for h in range(4)  # with harmonics
        )
        out[t : t + length] = note * _envelope(length, 0.02, 0.2)
        t += length
    return out


def _pulses(n: int, every_s: float, length_s: float, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    step, width = max(1, int(every_s * SR)), max(1, int(length_s * SR))
    for t in range(int(rng.integers(0, step)), n, step):
        w = min(width, n - t)
        out[t : t + w] += rng.standard_normal(w) * np.exp(-np.arange(w) / (width / 5))
    return out


def non_speech_clip(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One clip of a non-speech kind, float32 at 16 kHz, at a random level."""
    n = max(1, int(seconds * SR))
    t = np.arange(n) / SR
    if kind in ("white", "pink", "brown", "blue"):
        x = _coloured(n, {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0}[kind], rng)
    elif kind == "tone":
        x = np.sin(2 * np.pi * rng.uniform(80, 4000) * t)
    elif kind == "sweep":
        f0, f1 = rng.uniform(50, 500), rng.uniform(1000, 7000)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds)))
    elif kind == "chords":
        x = _chords(n, rng)
    elif kind == "drums":
        x = _pulses(n, rng.uniform(0.3, 0.7), 0.08, rng) + 0.3 * _pulses(n, 0.125, 0.02, rng)
    elif kind == "silence":
        return np.zeros(n, np.float32)
    elif kind == "clicks":
        x = _pulses(n, rng.uniform(0.05, 1.0), 0.002, rng)
    elif kind == "room":
        noise = _coloured(n, -1.5, rng)
        hum = np.sin(2 * np.pi * rng.choice(HUM_HZ) * t)
        return _at_level(noise / max(float(np.std(noise)), 1e-9) + 0.5 * hum, ROOM_DBFS)
    elif kind == "ring":  # 2 s on / 4 s off, two tones (a phone's ring cadence)
        on = (t % 6.0) < 2.0
        x = (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)) * on
    else:
        raise ValueError(f"unknown non-speech kind {kind!r}; kinds: {', '.join(KINDS)}")
    return _at_level(x, rng.uniform(*LEVEL_DBFS))


def _at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    y = x * (10 ** (dbfs / 20) / rms)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def write_non_speech(folder: Path, clips: int, seed: int = 0) -> list[dict]:
    """`clips` FLAC files cycling through KINDS; a manifest of uri, kind, duration."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(clips):
        kind = KINDS[i % len(KINDS)]
        seconds = float(np.exp(rng.uniform(np.log(MIN_S), np.log(MAX_S))))
        name = f"ns{i:04d}_{kind}.flac"
        sf.write(folder / name, non_speech_clip(kind, seconds, rng), SR, subtype="PCM_16")
        rows.append({"uri": name, "kind": kind, "duration_s": round(seconds, 3), "text": ""})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def speech_files(
    clips: list[np.ndarray], texts: list[str], files: int, per_file: int, seed: int = 0
) -> list[dict]:
    """Long speech files: `per_file` demo sentences each, with silences between them. Each
    has its samples, its text, and every sentence's known start/end in seconds (the first and
    last sample of its clip above ONSET_LEVEL: the clips are TTS in digital silence)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(files):
        parts, sentences, t = [], [], 0.0
        for k in range(per_file):
            j = (f * per_file + k) % len(clips)
            gap = np.zeros(int(rng.uniform(*SPEECH_GAP_S) * SR), np.float32)
            parts += [gap, clips[j]]
            t += len(gap) / SR
            loud = np.flatnonzero(np.abs(clips[j]) > ONSET_LEVEL)
            first, last = (loud[0], loud[-1] + 1) if len(loud) else (0, len(clips[j]))
            sentences.append((t + first / SR, t + last / SR, texts[j]))
            t += len(clips[j]) / SR
        samples = np.concatenate(parts)
        out.append(
            {"samples": samples, "text": " ".join(s[2] for s in sentences), "sentences": sentences}
        )
    return out
