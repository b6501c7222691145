"""Decode/resample/probe on real encoded files, and every bad input of the foundation issue."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from audio_factory import PYAV_FORMATS, SF_FORMATS, dominant_freq, tone, write
from earmark.audio.decode import TARGET_SR, decode_audio, to_float32
from earmark.audio.fetch import read_and_decode
from earmark.contracts import EarmarkError, ErrorKind, ErrorStage, LimitsSpec

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


@pytest.mark.slow
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


def _frame_mono(frame) -> np.ndarray:
    """Reference downmix of one frame on its own: (channels, samples) float32, channel mean."""
    arr = frame.to_ndarray()
    if not frame.format.is_planar:  # packed frames come out interleaved as (1, samples*ch)
        arr = arr.reshape(-1, frame.layout.nb_channels).T
    return to_float32(arr, frame.format.name.rstrip("p")).mean(axis=0, dtype=np.float32)


def _reference_decode(path) -> np.ndarray:
    """The pre-chunking algorithm: every frame converted and downmixed on its own, then one
    resampler over the whole mono signal."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        frames = [(_frame_mono(f), f.sample_rate) for f in c.decode(stream)]
    mono, sr = np.concatenate([m for m, _ in frames]), frames[0][1]
    if sr == TARGET_SR:
        return mono
    rs = av.AudioResampler(format="flt", layout="mono", rate=TARGET_SR)
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
    frame.sample_rate = sr
    out = rs.resample(frame) + rs.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out])


@pytest.mark.parametrize(
    ("fmt", "channels", "sr"),
    [("wav16", 2, 44100), ("wav24", 6, 48000), ("ogg", 2, 22050), ("mp3", 1, 16000)],
)
def test_chunked_decode_equals_frame_by_frame(tmp_path, fmt, channels, sr):
    """Chunks of CHUNK_SAMPLES (several here) give what frame-by-frame conversion gives."""
    from earmark.audio.samples import CHUNK_SAMPLES

    seconds = 3.5 * CHUNK_SAMPLES / sr
    x = tone(700, sr, seconds, channels=channels, amp=0.3)
    x[0] *= 0.5  # channels differ, so the downmix is visible
    path = write(tmp_path / f"c.{EXT[fmt]}", x, sr, fmt)
    got = decode_path(path)
    ref = _reference_decode(path)
    assert got.samples.shape == ref.shape
    np.testing.assert_allclose(got.samples, ref, rtol=0, atol=1e-6)
    probe = decode_path(path, keep_samples=False)
    assert probe.samples is None
    assert (probe.duration_s, probe.source_channels, probe.codec) == (
        got.duration_s,
        got.source_channels,
        got.codec,
    )


def test_chunker_splits_where_the_frame_format_changes():
    """Frames that switch sample format, layout or rate mid-stream are each downmixed by their
    own rule; a chunk never mixes two formats."""
    import av

    from earmark.audio.samples import Chunker

    rng = np.random.default_rng(0)

    def frame(fmt, layout, n, rate=16000):
        ch = {"mono": 1, "stereo": 2, "5.1": 6}[layout]
        if fmt.startswith("s16"):
            data = rng.integers(-30000, 30000, (ch, n), dtype=np.int16)
        else:
            data = rng.uniform(-1, 1, (ch, n)).astype(np.float32)
        if not fmt.endswith("p"):
            data = np.ascontiguousarray(data.T).reshape(1, -1)
        f = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
        f.sample_rate = rate
        return f

    frames = [
        frame("s16", "stereo", 1000),
        frame("s16", "stereo", 700),
        frame("fltp", "stereo", 500),
        frame("fltp", "5.1", 900),
        frame("flt", "mono", 300),
        frame("s16p", "5.1", 400, rate=22050),
    ]
    chunker, chunks = Chunker(), []
    for f in frames:
        out = chunker.add(f, f.samples)
        if out is not None:
            chunks.append((out, chunker.rate))
    chunks.append((chunker.flush(), chunker.rate))
    assert [len(c) for c, _ in chunks] == [1700, 500, 900, 300, 400]
    assert [r for _, r in chunks] == [16000] * 4 + [22050]
    ref = np.concatenate([_frame_mono(f) for f in frames])
    got = np.concatenate([c for c, _ in chunks])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7)


def test_probe_finds_nan_without_resampling(tmp_path):
    x = tone(300, 44100, 2.0, channels=2)
    x[1, 5000] = np.inf
    p = write(tmp_path / "inf.wav", x, 44100, "wavf32")
    with pytest.raises(EarmarkError) as ei:
        decode_path(p, keep_samples=False)
    assert ei.value.kind == ErrorKind.NON_FINITE


# -- hostile files: what an upload or a poisoned archive can hold --------------------------------

SDP = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio {port} RTP/AVP 0\n"


def _udp_ports_in_use() -> set[int]:
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        ports |= {int(line.split()[1].rsplit(":", 1)[1], 16) for line in lines}
    return ports


def test_sdp_file_is_refused_at_once_and_opens_no_socket():
    """FFmpeg's SDP demuxer would listen on the UDP port the file names and wait 20 s."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a port free right now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = _udp_ports_in_use()
    err = _expect(SDP.replace(b"{port}", str(port).encode()), ErrorStage.DECODE,
                  ErrorKind.UNSUPPORTED_FORMAT, ["not in a supported audio container"])  # fmt: skip
    assert port not in _udp_ports_in_use() - before
    assert "wav" in err.message and "mp3" in err.message  # it says what is supported


def test_playlists_and_concat_lists_never_read_other_files(tmp_path):
    """A playlist naming a real local audio file must not decode it (it would read any path).
    FFmpeg's own defaults refuse these from a byte stream too; the demuxer list refuses them
    again, so a future FFmpeg default cannot open them."""
    real = write(tmp_path / "secret.wav", tone(300, 16000, 1.0), 16000, "wav16")
    for body in (
        f"ffconcat version 1.0\nfile '{real}'\n",
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{real}\n#EXT-X-ENDLIST\n",
        f"#EXTM3U\n#EXTINF:1,x\nfile://{real}\n",
    ):
        with pytest.raises(EarmarkError) as ei:
            decode_audio(body.encode(), what="list")
        assert ei.value.kind in (ErrorKind.UNSUPPORTED_FORMAT, ErrorKind.CORRUPT), str(ei.value)


def _wav_with_fmt(tag: int, bits: int, data: bytes = b"\0" * 3200, rate: int = 16000) -> bytes:
    block = max(bits // 8, 1)
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data))
    return b"RIFF" + struct.pack("<I", len(body) + len(data)) + body + data


@pytest.mark.parametrize(("tag", "bits"), [(1, 0), (0x1234, 16), (3, 16)])
def test_wav_encoding_without_a_decoder_is_an_error_not_a_crash(tag, bits):
    _expect(_wav_with_fmt(tag, bits), ErrorStage.DECODE, ErrorKind.UNSUPPORTED_FORMAT,
            ["no decoder", "wav"])  # fmt: skip


@pytest.mark.parametrize("rate", [1, 100, 3999, 2_000_000])
def test_sample_rate_out_of_range_is_refused(rate):
    err = _expect(_wav_with_fmt(1, 16, rate=rate), ErrorStage.DECODE,
                  ErrorKind.UNSUPPORTED_FORMAT, ["sample rate"])  # fmt: skip
    assert f"{rate} Hz" in err.message


def _with_data_size(path, size: int) -> bytes:
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.index(b"data") + 4, size)
    return bytes(data)


@pytest.mark.parametrize("size", [0, 0x7FFFFFFF, 0xFFFFFFFF])
def test_streamed_wav_with_unknown_length_decodes(tmp_path, size):
    """Recorders writing to a pipe leave one of these sizes; the audio is all there."""
    p = write(tmp_path / "s.wav", tone(300, 16000, 2.0), 16000, "wav16")
    audio = decode_audio(_with_data_size(p, size), max_duration_s=1.0e3)
    assert audio.duration_s == pytest.approx(2.0)


def test_lying_header_on_a_small_file_is_truncated_not_too_long(tmp_path):
    """A 2-s file whose header claims 27 h is damaged, not over a 30-min limit."""
    p = write(tmp_path / "l.wav", tone(300, 16000, 2.0), 16000, "wav16")
    err = _expect(_with_data_size(p, 0xFFFFFFF0), ErrorStage.DECODE, ErrorKind.TRUNCATED,
                  ["truncated", "2.00 s decoded"], max_duration_s=1800.0)  # fmt: skip
    assert "limit" not in err.message


def test_cut_wav_with_a_small_limit_is_truncated_not_too_long(tmp_path):
    """The header claims 4 s, the file holds 0.1 s: over a 2-s limit only by its lie."""
    p = write(tmp_path / "w.wav", tone(300, 16000, 4.0), 16000, "wav16")
    data = p.read_bytes()[:3244]
    err = _expect(data, ErrorStage.DECODE, ErrorKind.TRUNCATED, ["truncated"], max_duration_s=2.0)
    assert "4.00 s its header declares" in err.message
    long = write(tmp_path / "l.wav", tone(300, 16000, 3.0), 16000, "wav16")
    err = _expect(long, ErrorStage.DECODE, ErrorKind.TOO_LONG, ["limit"], max_duration_s=2.0)
    assert "lasts 3.0 s, over the 2.0 s limit" in err.message  # seconds, not "0.00 h"
