"""Long-audio windowing: exact coverage, the length limit, cuts in pauses, hard-cut fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earmark.audio import segment
from earmark.audio.segment import make_windows, plan_windows
from earmark.contracts import FamilyInfo

SR = 16_000


def bursts(seed: int = 0, n: int = 40) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Speech-like signal: harmonic bursts (0.6–2.5 s, syllable-rate amplitude modulation)
    separated by pauses (0.25–0.9 s) over a faint noise floor. Returns samples and the pauses."""
    rng = np.random.default_rng(seed)
    parts, pauses, pos = [], [], 0
    for _ in range(n):
        dur = rng.uniform(0.6, 2.5)
        t = np.arange(int(dur * SR)) / SR
        f0 = rng.uniform(100, 250)
        voice = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
        envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 4.0 * t))  # never silent inside a burst
        parts.append(0.3 * voice * envelope * np.hanning(len(t)) ** 0.1)
        pos += len(t)
        gap = int(rng.uniform(0.25, 0.9) * SR)
        parts.append(np.zeros(gap))
        pauses.append((pos, pos + gap))
        pos += gap
    x = np.concatenate(parts) + rng.normal(0, 1e-3, pos)
    return x.astype(np.float32), pauses


def assert_cover(bounds: list[tuple[int, int]], n: int, max_len: int) -> None:
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (_, e0), (s1, _) in zip(bounds, bounds[1:], strict=False):
        assert e0 == s1  # no gap, no overlap
    assert all(0 < e - s <= max_len for s, e in bounds)


def in_pause(cut: int, pauses: list[tuple[int, int]]) -> bool:
    return any(a <= cut <= b for a, b in pauses)


def test_short_audio_is_one_window_and_empty_is_none() -> None:
    x = np.zeros(SR * 5, np.float32)
    assert plan_windows(x, SR, 30.0) == [(0, len(x))]
    exact = np.zeros(SR * 30, np.float32)
    assert plan_windows(exact, SR, 30.0) == [(0, len(exact))]
    assert plan_windows(np.zeros(0, np.float32), SR, 30.0) == []


def test_energy_cuts_cover_audio_and_land_in_pauses() -> None:
    x, pauses = bursts()
    bounds = plan_windows(x, SR, 10.0, vad="energy")
    assert len(bounds) >= 6
    assert_cover(bounds, len(x), 10 * SR)
    assert all(in_pause(e, pauses) for _, e in bounds[:-1])
    # a hard cut every 10 s would split bursts: the pause search is what keeps them whole
    hard = plan_windows(x, SR, 10.0, vad="none")
    assert_cover(hard, len(x), 10 * SR)
    assert not all(in_pause(e, pauses) for _, e in hard[:-1])


def test_vad_function_pauses_are_used_and_the_longest_wins() -> None:
    x = np.full(SR * 25, 0.3, np.float32)  # loud everywhere: energy alone finds no pause
    x *= np.sin(np.arange(len(x)) * 0.05).astype(np.float32)
    calls = []

    def fake_vad(region: np.ndarray, sr: int) -> list[tuple[int, int]]:
        calls.append(len(region))
        # speech except two gaps: 0.2 s at 2 s and 0.6 s at 3 s into the search region
        return [(0, 2 * sr), (int(2.2 * sr), 3 * sr), (int(3.6 * sr), len(region))]

    bounds = plan_windows(x, SR, 10.0, vad=fake_vad)
    assert_cover(bounds, len(x), 10 * SR)
    assert calls and calls[0] == 5 * SR  # searched in the last half of the allowed window
    assert bounds[0][1] == 5 * SR + int(3.3 * SR)  # middle of the longer gap


def test_no_pause_falls_back_to_hard_cuts() -> None:
    t = np.arange(SR * 25) / SR
    x = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # continuous tone
    for vad in ("energy", "silero"):
        assert plan_windows(x, SR, 10.0, vad=vad) == [
            (0, 10 * SR),
            (10 * SR, 20 * SR),
            (20 * SR, 25 * SR),
        ]


def test_silero_cuts_between_words_of_real_speech(demo_dir) -> None:
    from faster_whisper import decode_audio

    rows = [json.loads(line) for line in (demo_dir / "manifest.jsonl").read_text().splitlines()]
    speech = [r for r in rows if r["labels"] == "speech"][:8]
    rng = np.random.default_rng(1)
    parts = []
    for r in speech:
        parts.append(decode_audio(str(demo_dir / r["uri"]), sampling_rate=SR))
        parts.append(np.zeros(int(rng.uniform(0.2, 0.5) * SR), np.float32))
    x = np.concatenate(parts) + rng.normal(0, 2e-3, sum(map(len, parts))).astype(np.float32)
    bounds = plan_windows(x, SR, 8.0, vad="silero")
    assert len(bounds) >= 4
    assert_cover(bounds, len(x), 8 * SR)

    def rms(a: np.ndarray) -> float:
        return float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))

    # 100 ms around every cut is at the noise floor (clip padding or inserted pause), not speech
    for _, cut in bounds[:-1]:
        assert rms(x[cut - SR // 20 : cut + SR // 20]) < 0.1 * rms(x), cut / SR
    assert segment._silero_model() is segment._silero_model()  # loaded once, cached


def test_bad_arguments() -> None:
    x = np.zeros(SR * 40, np.float32)
    with pytest.raises(ValueError, match="vad mode"):
        plan_windows(x, SR, 30.0, vad="webrtc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        plan_windows(x, SR, 0.0)


class _Doubler:
    info = FamilyInfo("fake", "none", 10.0, None, ("asr",), "m", "C")

    @classmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        return {"x": samples * 2}


def test_make_windows_fills_times_and_features() -> None:
    x, _ = bursts(seed=3, n=12)
    windows = make_windows("file-1", x, _Doubler, vad="energy")  # type: ignore[arg-type]
    assert len(windows) >= 2
    assert [w.index for w in windows] == list(range(len(windows)))
    pos = 0
    for w in windows:
        assert w.audio_id == "file-1"
        assert w.start_s == pytest.approx(pos / SR) and w.num_samples <= 10 * SR
        assert w.end_s == pytest.approx((pos + w.num_samples) / SR)
        np.testing.assert_array_equal(w.features["x"], 2 * x[pos : pos + w.num_samples])
        pos += w.num_samples
    assert pos == len(x)
