"""MOSS-Audio CPU side: log-mel parity with Whisper's extractor, token counts, time markers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from earmark.models.moss import (
    MossModel,
    audio_placeholder_ids,
    audio_token_count,
    log_mel,
    parse_timed_segments,
)

A = 7  # a stand-in audio placeholder id
DIGITS = [100 + d for d in range(10)]  # stand-in ids of "0".."9"


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def test_log_mel_matches_whisper_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    x = _audio(3.7)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000, hop_length=160, n_fft=400)
    ref = fe._np_extract_fbank_features(x[None], "cpu")[0]
    ours = log_mel(x)
    assert ours.shape == ref.shape == (128, x.size // 160)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4)


@pytest.mark.parametrize("n", [400, 16_000, 16_159, 47_999, 480_000])
def test_log_mel_has_no_30s_padding(n: int) -> None:
    assert log_mel(_audio(n / 16_000)[:n]).shape == (128, n // 160)


def test_very_short_window_is_padded_to_one_frame() -> None:
    mel = log_mel(np.zeros(50, dtype=np.float32))
    assert mel.shape == (128, 2) and audio_token_count(mel.shape[1]) == 1


@pytest.mark.parametrize(
    ("frames", "tokens"),
    [(1, 1), (2, 1), (8, 1), (9, 2), (16, 2), (17, 3), (100, 13), (1000, 125), (3000, 375)],
)
def test_token_count_formula(frames: int, tokens: int) -> None:
    assert audio_token_count(frames) == tokens
    # = ceil(ceil(ceil(frames / 2) / 2) / 2)
    assert tokens == int(np.ceil(np.ceil(np.ceil(frames / 2) / 2) / 2))


def test_thirty_seconds_give_375_tokens() -> None:
    feats = MossModel.prepare(_audio(30.0))
    assert audio_token_count(feats["mel"].shape[1]) == 375


def test_prepare_output_is_picklable_numpy() -> None:
    feats = MossModel.prepare(_audio(1.0))
    back = pickle.loads(pickle.dumps(feats))
    assert set(back) == {"mel"} and isinstance(back["mel"], np.ndarray)
    np.testing.assert_array_equal(back["mel"], feats["mel"])


def test_placeholders_without_markers() -> None:
    assert audio_placeholder_ids(60, A) == [A] * 60


def test_time_markers_after_every_25_tokens() -> None:
    ids = audio_placeholder_ids(60, A, DIGITS)  # 4.8 s: markers "2" and "4"
    assert ids == [A] * 25 + [DIGITS[2]] + [A] * 25 + [DIGITS[4]] + [A] * 10
    exact = audio_placeholder_ids(50, A, DIGITS)  # 4.0 s ends with its marker
    assert exact == [A] * 25 + [DIGITS[2]] + [A] * 25 + [DIGITS[4]]
    assert audio_placeholder_ids(24, A, DIGITS) == [A] * 24


def test_time_markers_write_every_digit_of_the_second() -> None:
    ids = audio_placeholder_ids(375, A, DIGITS)  # 30 s
    assert ids.count(A) == 375
    markers = [t for t in ids if t != A]
    expected = [DIGITS[int(c)] for s in range(2, 31, 2) for c in str(s)]
    assert markers == expected
    # "10" sits right after the 125th audio token as the two ids for "1" and "0"
    pos = [i for i, t in enumerate(ids) if t == A][124] + 1
    assert ids[pos : pos + 2] == [DIGITS[1], DIGITS[0]]


def test_parse_timed_segments() -> None:
    text = "<think>\n</think>\n\n[0.00 - 2.50] hello there\n00:03-00:04.5: bye\nno time here"
    assert parse_timed_segments(text) == [
        {"start_s": 0.0, "end_s": 2.5, "transcript": "hello there"},
        {"start_s": 3.0, "end_s": 4.5, "transcript": "bye"},
    ]
