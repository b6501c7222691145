"""Decode/resample/probe on real encoded files, and every bad input of the foundation issue."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from audio_factory import PYAV_FORMATS, SF_FORMATS, dominant_freq, tone, write
from earmark.audio.decode import TARGET_SR, decode_audio, downmix
from earmark.io.reader import read_and_decode
from earmark.schemas import EarmarkError, ErrorKind, ErrorStage, LimitsSpec

EXT = {
    "wav16": "wav",
    "wav24": "wav",
    "wav32": "wav",
    "wavf32": "wav",
    "wav8": "wav",
    "wavulaw": "wav",
    "ogg": "ogg",
    "mp3": "mp3",
    "opus": "opus",
    "m4a": "m4a",
    "webm": "webm",
    "flac": "flac",
}
CODEC = {
    "wav16": "pcm_s16le",
    "wav24": "pcm_s24le",
    "wav32": "pcm_s32le",
    "wavf32": "pcm_f32le",
    "wav8": "pcm_u8",
    "wavulaw": "pcm_mulaw",
    "ogg": "vorbis",
    "mp3": "mp3",
    "opus": "opus",
    "m4a": "aac",
    "webm": "opus",
    "flac": "flac",
}


def decode_path(path, **kw):
    with open(path, "rb") as f:
        return decode_audio(f, what=str(path), **kw)


@pytest.mark.parametrize("fmt", sorted(set(SF_FORMATS) | set(PYAV_FORMATS)))
def test_every_format_decodes_to_mono_16k_tone(tmp_path, fmt):
    sr = 44100 if fmt not in ("wavulaw", "wav8") else 8000
    path = write(tmp_path / f"x.{EXT[fmt]}", tone(1000, sr, 1.0, channels=2), sr, fmt)
    audio = decode_path(path)
    assert audio.codec == CODEC[fmt]
    assert audio.source_channels == 2
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert abs(audio.duration_s - 1.0) < 0.1  # codec priming may add a frame
    assert abs(len(audio.samples) / TARGET_SR - audio.duration_s) < 0.01
    assert abs(dominant_freq(audio.samples, TARGET_SR) - 1000) < 10


def test_tone_441_stereo_becomes_1khz_at_16k(tmp_path):
    path = write(tmp_path / "t.wav", tone(1000, 44100, 2.0, channels=2), 44100, "wav16")
    audio = decode_path(path)
    assert audio.source_sample_rate == 44100 and audio.source_channels == 2
    assert len(audio.samples) == pytest.approx(32000, abs=2)
    assert dominant_freq(audio.samples, TARGET_SR) == pytest.approx(1000, abs=2)
    assert np.max(np.abs(audio.samples)) == pytest.approx(0.5, abs=0.02)  # level kept


def test_8khz_is_upsampled_not_rejected(tmp_path):
    path = write(tmp_path / "t8.wav", tone(440, 8000, 1.0), 8000, "wav16")
    audio = decode_path(path)
    assert audio.source_sample_rate == 8000
    assert len(audio.samples) == pytest.approx(16000, abs=2)
    assert dominant_freq(audio.samples, TARGET_SR) == pytest.approx(440, abs=3)


def test_downmix_is_channel_mean(tmp_path):
    assert np.allclose(downmix(np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)), [0.5, 0.5])
    # left-only tone comes out at half level; opposite-phase channels cancel
    left = tone(500, 16000, 1.0, channels=2)
    left[1] = 0
    a = decode_path(write(tmp_path / "l.wav", left, 16000, "wavf32"))
    assert np.max(np.abs(a.samples)) == pytest.approx(0.25, abs=0.01)
    anti = tone(500, 16000, 1.0, channels=2)
    anti[1] *= -1
    b = decode_path(write(tmp_path / "a.wav", anti, 16000, "wavf32"))
    assert np.max(np.abs(b.samples)) < 1e-4


def test_eight_channels_96k(tmp_path):
    x = tone(1000, 96000, 1.0, channels=8, amp=0.4)
    audio = decode_path(write(tmp_path / "c8.wav", x, 96000, "wav24"))
    assert audio.source_channels == 8 and audio.source_sample_rate == 96000
    assert dominant_freq(audio.samples, TARGET_SR) == pytest.approx(1000, abs=3)


def _expect(path_or_bytes, stage, kind, words, **kw):
    with pytest.raises(EarmarkError) as ei:
        if isinstance(path_or_bytes, bytes):
            decode_audio(path_or_bytes, what="input", **kw)
        else:
            read_and_decode(str(path_or_bytes), path_or_bytes.stat().st_size, LimitsSpec(**kw))
    err = ei.value
    assert err.stage == stage and err.kind == kind, str(err)
    for w in words:
        assert w in err.message.lower(), err.message
    return err


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    _expect(p, ErrorStage.READ, ErrorKind.EMPTY_FILE, ["empty"])
    _expect(b"", ErrorStage.DECODE, ErrorKind.EMPTY_FILE, ["empty"])


def test_random_bytes_named_mp3(tmp_path):
    p = tmp_path / "noise.mp3"
    p.write_bytes(np.random.default_rng(0).bytes(20000))
    with pytest.raises(EarmarkError) as ei:
        read_and_decode(str(p), p.stat().st_size, LimitsSpec())
    assert ei.value.stage == ErrorStage.DECODE
    assert ei.value.kind in (ErrorKind.CORRUPT, ErrorKind.NO_AUDIO)
    assert str(p) in ei.value.message


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n" * 50)
    _expect(p, ErrorStage.DECODE, ErrorKind.CORRUPT, ["not a readable audio file"])


def test_flac_cut_in_half_is_truncated(tmp_path):
    p = write(tmp_path / "f.flac", tone(300, 16000, 4.0), 16000, "flac")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    err = _expect(p, ErrorStage.DECODE, ErrorKind.TRUNCATED, ["truncated"])
    assert "4.00 s" in err.message


def test_mp3_cut_in_half_is_truncated(tmp_path):
    p = write(tmp_path / "m.mp3", tone(300, 44100, 4.0), 44100, "mp3")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    # LAME writes a Xing/Info header with the frame count, so the cut is detectable
    err = _expect(p, ErrorStage.DECODE, ErrorKind.TRUNCATED, ["truncated"])
    assert "4.0" in err.message


def test_wav_header_claims_more_data(tmp_path):
    p = write(tmp_path / "w.wav", tone(300, 16000, 1.0), 16000, "wav16")
    data = bytearray(p.read_bytes())
    idx = data.index(b"data")
    struct.pack_into("<I", data, idx + 4, 16000 * 2 * 10)  # claims 10 s
    p.write_bytes(bytes(data))
    err = _expect(p, ErrorStage.DECODE, ErrorKind.TRUNCATED, ["truncated", "declares"])
    assert "10.00 s" in err.message


def test_wav_with_zero_and_one_sample(tmp_path):
    p0 = write(tmp_path / "z.wav", np.zeros((1, 0), np.float32), 16000, "wav16")
    _expect(p0, ErrorStage.DECODE, ErrorKind.NO_AUDIO, ["no audio samples"])
    p1 = write(tmp_path / "one.wav", np.full((1, 1), 0.5, np.float32), 16000, "wav16")
    audio = read_and_decode(str(p1), p1.stat().st_size, LimitsSpec())
    assert audio.duration_s == pytest.approx(1 / 16000)


def test_float_wav_with_nan_and_inf(tmp_path):
    x = tone(300, 16000, 1.0)
    x[0, 100] = np.nan
    x[0, 200] = np.inf
    p = write(tmp_path / "nan.wav", x, 16000, "wavf32")
    _expect(p, ErrorStage.DECODE, ErrorKind.NON_FINITE, ["nan"])


def test_too_long_is_refused_from_header_before_decoding(tmp_path):
    p = write(tmp_path / "long.wav", tone(300, 8000, 12.0), 8000, "wav16")
    err = _expect(p, ErrorStage.DECODE, ErrorKind.TOO_LONG, ["limit"], max_duration_s=10.0)
    assert "max_duration_s" in err.message


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(EarmarkError) as ei:
        read_and_decode(str(tmp_path / "nope.wav"), None, LimitsSpec())
    assert ei.value.kind == ErrorKind.NOT_FOUND and ei.value.stage == ErrorStage.READ


def test_two_hour_file_streams_without_holding_source(tmp_path):
    """2 h at 8 kHz mono (115 MB as WAV): probe-only decoding keeps no samples; the decoded
    mono 16 kHz result is the only full-length array when samples are kept."""
    import tracemalloc

    sr, seconds = 8000, 2 * 3600
    p = tmp_path / "twohours.wav"
    import soundfile as sf

    with sf.SoundFile(str(p), "w", sr, 1, subtype="PCM_16") as f:
        block = tone(200, sr, 60.0)[0]
        for _ in range(seconds // 60):
            f.write(block)
    tracemalloc.start()
    audio = read_and_decode(str(p), p.stat().st_size, LimitsSpec(), keep_samples=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert audio.duration_s == pytest.approx(seconds, abs=0.01)
    assert audio.samples is None
    assert peak < 50e6  # streaming: far below the 115 MB file or 460 MB decoded result
