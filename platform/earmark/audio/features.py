"""Audio features the audio-LMs consume, in pure numpy (runs in CPU decode workers).

Eureka-Audio feeds its Whisper-large-v3-style encoder a 128-bin log-mel, computed exactly as the
reference (`Alittleegg/Eureka-Audio`, `eureka_infer/utils/audio.py`): zero-pad the waveform to a
multiple of 1280 samples (one audio token = 80 ms), periodic Hann(400) STFT with reflect padding and
hop 160, power spectrum, Slaney mel filters, log10 clipped at 1e-10, dynamic range limited to 8
(log10 units) below the maximum, (x + 4) / 4, last frame dropped. The encoder takes fixed 3000-frame
chunks; the last chunk is padded with -1.5 (the normalized value of log10(1e-10)), NOT Whisper's
zero-audio padding.

MiDashengLM takes the raw waveform; only its audio-token count is computed here (§2.1).
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16_000  # Hz
N_FFT = 400  # samples (25 ms STFT window)
HOP_LENGTH = 160  # samples (10 ms between mel frames)
N_FREQ = N_FFT // 2 + 1  # rfft bins
N_MELS = 128  # mel bins of the Whisper-large-v3 style encoder
F_MAX = SAMPLE_RATE / 2  # Hz, top of the mel filter bank
LOG_FLOOR = 1e-10  # power floor before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the maximum
EUREKA_TOKEN_SAMPLES = 1280  # samples per Eureka audio token (80 ms)
MEL_PER_TOKEN = EUREKA_TOKEN_SAMPLES // HOP_LENGTH  # 8 mel frames per audio token
CHUNK_FRAMES = 3000  # mel frames per encoder chunk (30 s)
CHUNK_TOKENS = CHUNK_FRAMES // MEL_PER_TOKEN  # 375 audio tokens per chunk
CHUNK_PAD_VALUE = -1.5  # (log10(LOG_FLOOR) + 4) / 4: pad value of the last chunk

DASHENG_HOP = 160  # samples per Dasheng mel frame (10 ms)
DASHENG_PATCH_FRAMES = 4  # mel frames per encoder patch (40 ms)
DASHENG_SUBSAMPLE = 5  # encoder frames per LLM token (200 ms, 5 tokens/s)
DASHENG_MIN_SAMPLES = 3200  # shorter audio is zero-padded to this (else 0 tokens)


# ---------------------------------------------------------------------------------------------
# Mel filters
# ---------------------------------------------------------------------------------------------


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = hz / f_sp
    log_region = hz >= min_log_hz
    mel[log_region] = min_log_mel + np.log(hz[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    hz = mel * f_sp
    log_region = mel >= min_log_mel
    hz[log_region] = min_log_hz * np.exp(logstep * (mel[log_region] - min_log_mel))
    return hz


def slaney_mel_filters(
    n_mels: int = N_MELS, n_freq: int = N_FREQ, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Slaney-scale, Slaney-normalized triangular filters, shape [n_mels, n_freq] (float32).

    Same layout as Whisper's `mel_filters.npz["mel_128"]` (one row per mel bin).
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_freq)
    mel_edges = np.linspace(
        _hz_to_mel_slaney(np.array([0.0]))[0],
        _hz_to_mel_slaney(np.array([sample_rate / 2]))[0],
        n_mels + 2,
    )
    hz_edges = _mel_to_hz_slaney(mel_edges)
    widths = np.diff(hz_edges)
    # distance of each FFT bin to each edge -> rising and falling slopes of every triangle
    dist = hz_edges[None, :] - fft_freqs[:, None]
    rising = -dist[:, :-2] / widths[:-1]
    falling = dist[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalization: each triangle has unit area, so bins are comparable across widths
    filters *= 2.0 / (hz_edges[2 : n_mels + 2] - hz_edges[:n_mels])
    return filters.T.astype(np.float32)


_DEFAULT_FILTERS: np.ndarray | None = None


def default_mel_filters() -> np.ndarray:
    """The 128-bin filters, synthesized once per process (equal to Whisper's to ~1e-9)."""
    global _DEFAULT_FILTERS
    if _DEFAULT_FILTERS is None:
        _DEFAULT_FILTERS = slaney_mel_filters()
    return _DEFAULT_FILTERS


def load_mel_filters(path: str) -> np.ndarray:
    """`mel_128` from a checkpoint's `mel_filters.npz`, as [128, 201] float32."""
    with np.load(path) as data:
        if "mel_128" not in data:
            raise KeyError(f"{path} has no 'mel_128' array (keys: {sorted(data.keys())})")
        filters = np.asarray(data["mel_128"], dtype=np.float32)
    if filters.shape == (N_FREQ, N_MELS):
        filters = filters.T
    if filters.shape != (N_MELS, N_FREQ):
        raise ValueError(f"{path}: mel_128 has shape {filters.shape}, expected (128, 201)")
    return filters


# ---------------------------------------------------------------------------------------------
# Eureka log-mel
# ---------------------------------------------------------------------------------------------


def eureka_num_tokens(num_samples: int) -> int:
    """Audio tokens (`<|audio_pad|>` count) for a waveform: one per started 1280 samples."""
    return -(-int(num_samples) // EUREKA_TOKEN_SAMPLES)


def pad_to_token_multiple(samples: np.ndarray) -> np.ndarray:
    """Right-pad with zeros to a multiple of 1280 samples (reference step 2)."""
    samples = np.asarray(samples, dtype=np.float32)
    target = eureka_num_tokens(len(samples)) * EUREKA_TOKEN_SAMPLES
    if target == len(samples):
        return samples
    return np.pad(samples, (0, target - len(samples)))


def _periodic_hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def log_mel(samples: np.ndarray, filters: np.ndarray | None = None) -> np.ndarray:
    """Whisper-style normalized log-mel, shape [128, len(samples) // 160] (float32)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("cannot compute a log-mel of 0 samples")
    filters = default_mel_filters() if filters is None else filters
    half = N_FFT // 2
    # reflect needs more than `half` samples; tiny inputs fall back to zero padding
    mode = "reflect" if len(x) > half else "constant"
    x = np.pad(x, (half, half), mode=mode)
    n_frames = 1 + (len(x) - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, N_FFT), strides=(x.strides[0] * HOP_LENGTH, x.strides[0])
    )
    spec = np.fft.rfft(frames * _periodic_hann(N_FFT), axis=-1)
    power = spec.real**2 + spec.imag**2  # [frames, 201]
    mel = filters.astype(np.float64) @ power.T  # [128, frames]
    logm = np.log10(np.maximum(mel, LOG_FLOOR)).astype(np.float32)
    logm = logm[:, :-1]  # the reference drops the last STFT frame before normalizing
    logm = np.maximum(logm, logm.max() - DYNAMIC_RANGE)
    return ((logm + 4.0) / 4.0).astype(np.float32)


def eureka_mel(samples: np.ndarray, filters: np.ndarray | None = None) -> np.ndarray:
    """Reference preprocessing of one window: pad to 1280 multiple, log-mel [128, 8 * tokens]."""
    return log_mel(pad_to_token_multiple(samples), filters)


def chunk_mel(mel: np.ndarray) -> np.ndarray:
    """Split [128, T] into [n_chunks, 128, 3000]; the tail of the last chunk is -1.5."""
    if mel.ndim != 2 or mel.shape[0] != N_MELS:
        raise ValueError(f"expected a [{N_MELS}, T] log-mel, got shape {mel.shape}")
    n_chunks = max(1, -(-mel.shape[1] // CHUNK_FRAMES))
    out = np.full((n_chunks, N_MELS, CHUNK_FRAMES), CHUNK_PAD_VALUE, dtype=np.float32)
    for i in range(n_chunks):
        part = mel[:, i * CHUNK_FRAMES : (i + 1) * CHUNK_FRAMES]
        out[i, :, : part.shape[1]] = part
    return out


# ---------------------------------------------------------------------------------------------
# MiDashengLM token count
# ---------------------------------------------------------------------------------------------


def dasheng_num_tokens(num_samples: int) -> int:
    """Audio tokens (`<|AUDIO|>` count) MiDashengLM gives a waveform (at least one).

    int(1 + n / 160) mel frames (center=True), 4 frames per patch, 5 patches per token.
    """
    frames = int(1 + int(num_samples) / DASHENG_HOP)
    return max(1, frames // DASHENG_PATCH_FRAMES // DASHENG_SUBSAMPLE)


def pad_to_min_length(samples: np.ndarray, minimum: int = DASHENG_MIN_SAMPLES) -> np.ndarray:
    """Zero-pad short audio to `minimum` samples (MiDashengLM needs ≥ 1 token of audio)."""
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) >= minimum:
        return samples
    return np.pad(samples, (0, minimum - len(samples)))
