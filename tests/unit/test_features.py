"""Eureka log-mel parity with Whisper's feature extractor, chunking, and audio-token counts."""

from __future__ import annotations

import numpy as np
import pytest

from earmark.audio import features as F

SR = F.SAMPLE_RATE


def _audio(n: int, seed: int = 0) -> np.ndarray:
    """A tone with noise and a quiet stretch: exercises the dynamic-range clamp."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(n)
    x[n // 3 : n // 2] *= 1e-4
    return x.astype(np.float32)


def test_slaney_filters_equal_transformers_mel_filter_bank():
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=128,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=SR,
        norm="slaney",
        mel_scale="slaney",
    ).T
    ours = F.slaney_mel_filters()
    assert ours.shape == (128, 201)
    assert np.abs(ours - ref).max() < 1e-7


@pytest.mark.parametrize("n", [1280, 16_000, 12_345, 5 * 1280 * 7, 30 * SR])
def test_log_mel_equals_whisper_feature_extractor(n):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=128)
    x = _audio(n, seed=n)
    ref = fe._np_extract_fbank_features(x[None], "cpu")[0]
    ours = F.log_mel(x)
    assert ours.shape == ref.shape == (128, n // F.HOP_LENGTH)
    assert np.abs(ours - ref).max() < 1e-4


def test_log_mel_with_shipped_filters_file(tmp_path):
    path = tmp_path / "mel_filters.npz"
    np.savez(path, mel_128=F.slaney_mel_filters())
    filters = F.load_mel_filters(str(path))
    x = _audio(8000)
    assert np.array_equal(F.log_mel(x, filters), F.log_mel(x))
    np.savez(path, mel_128=F.slaney_mel_filters().T)  # [201, 128] layout is accepted too
    assert F.load_mel_filters(str(path)).shape == (128, 201)
    np.savez(path, mel_80=np.zeros((80, 201)))
    with pytest.raises(KeyError, match="mel_128"):
        F.load_mel_filters(str(path))


@pytest.mark.parametrize(
    ("n", "tokens"),
    [(1, 1), (1279, 1), (1280, 1), (1281, 2), (2560, 2), (30 * SR - 1, 375), (30 * SR, 375)],
)
def test_eureka_token_count_and_mel_length(n, tokens):
    assert F.eureka_num_tokens(n) == tokens
    padded = F.pad_to_token_multiple(np.ones(n, np.float32))
    assert len(padded) == tokens * F.EUREKA_TOKEN_SAMPLES
    assert np.all(padded[n:] == 0.0) and np.all(padded[:n] == 1.0)
    assert F.eureka_mel(_audio(n)).shape == (128, tokens * F.MEL_PER_TOKEN)


def test_chunk_mel_pads_last_chunk_with_minus_1_5():
    assert F.CHUNK_PAD_VALUE == (np.log10(F.LOG_FLOOR) + 4.0) / 4.0
    mel = np.random.default_rng(0).standard_normal((128, 3008)).astype(np.float32)
    chunks = F.chunk_mel(mel)
    assert chunks.shape == (2, 128, 3000)
    assert np.array_equal(chunks[0], mel[:, :3000])
    assert np.array_equal(chunks[1, :, :8], mel[:, 3000:])
    assert np.all(chunks[1, :, 8:] == -1.5)
    exact = F.chunk_mel(mel[:, :3000])
    assert exact.shape == (1, 128, 3000) and np.array_equal(exact[0], mel[:, :3000])
    short = F.chunk_mel(F.eureka_mel(_audio(1280)))
    assert short.shape == (1, 128, 3000) and np.all(short[0, :, 8:] == -1.5)
    with pytest.raises(ValueError, match="128"):
        F.chunk_mel(np.zeros((80, 100), np.float32))


@pytest.mark.parametrize(
    ("n", "tokens"),
    [
        (3200, 1),  # minimum length: int(1 + 20) // 4 // 5
        (30 * SR, 150),  # 30 s -> 150 tokens (5 per second)
        (10 * SR, 50),
        (2 * 3200 - 161, 1),  # one sample short of the next token
        (2 * 3200 - 160, 2),  # the boundary: 1 + n/160 reaches a multiple of 20
        (7 * 3200 - 160, 7),
        (7 * 3200 - 161, 6),
        (1, 1),  # never zero tokens
    ],
)
def test_dasheng_token_count(n, tokens):
    assert F.dasheng_num_tokens(n) == tokens
    assert F.dasheng_num_tokens(n) == max(1, int(1 + n / 160) // 4 // 5)


def test_pad_to_min_length():
    assert len(F.pad_to_min_length(np.ones(100, np.float32))) == F.DASHENG_MIN_SAMPLES
    x = np.ones(5000, np.float32)
    assert F.pad_to_min_length(x) is not None and len(F.pad_to_min_length(x)) == 5000


def test_log_mel_rejects_bad_shapes():
    with pytest.raises(ValueError, match="0 samples"):
        F.log_mel(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="mono"):
        F.log_mel(np.zeros((2, 1600), np.float32))
