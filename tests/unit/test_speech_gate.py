"""The speech gate and what Whisper says about its text, with real decoders, the real
silero-vad and the real tiny.en: a sweep costs no ASR model time and gets an empty, no_speech
transcript; speech keeps its words, with word times that are ordered and inside their segment;
the temperature fallback is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from earmark.annotate.annotator import Annotator
from earmark.audio.decode import decode_audio
from earmark.audio.segment import make_windows
from earmark.audio.windows import Window
from earmark.contracts import ModelSpec, TaskRequest
from earmark.models.whisper import WhisperModel

ASR = [TaskRequest(name="asr")]


@pytest.fixture(scope="module")
def files(demo_dir):
    out = {}
    for name in ("n01_sweep.flac", "n02_noise.mp3", "s01_fox.wav", "s10_meeting.mp3"):
        audio = decode_audio((demo_dir / name).read_bytes(), what=name, keep_samples=True)
        out[name] = make_windows(name, audio.samples, WhisperModel)
    return out


@pytest.fixture(scope="module")
def annotator():
    return Annotator(ModelSpec(family="whisper", checkpoint="tiny.en"), ASR)


def test_windows_measure_their_speech(files):
    for name in ("n01_sweep.flac", "n02_noise.mp3"):
        assert sum(w.speech_s for w in files[name]) < 0.25, name
    for name in ("s01_fox.wav", "s10_meeting.mp3"):
        ws = files[name]
        assert all(0.0 <= w.speech_fraction <= 1.0 for w in ws)
        assert sum(w.speech_s for w in ws) > 0.5 * sum(w.duration_s for w in ws), name


@pytest.mark.slow
def test_non_speech_costs_no_asr_time_and_speech_keeps_its_words(files, annotator):
    names = list(files)
    before = annotator.model.stats.windows
    outcomes = annotator.annotate_files([files[n] for n in names])
    rows = dict(zip(names, (o.fields for o in outcomes), strict=True))
    # only the speech files' windows reached the model
    sent = annotator.model.stats.windows - before
    assert sent == len(files["s01_fox.wav"]) + len(files["s10_meeting.mp3"])
    for name in ("n01_sweep.flac", "n02_noise.mp3"):
        row = rows[name]
        assert row["transcript"] == "" and row["flags"] == ["no_speech"], name
        assert outcomes[names.index(name)].infer_s == 0.0
        assert all(s["avg_logprob"] is None and s["words"] is None for s in row["segments"])
    for name in ("s01_fox.wav", "s10_meeting.mp3"):
        row = rows[name]
        assert row["transcript"] and "no_speech" not in row["flags"], name
        assert row["speech_s"] > 1.0 and row["language"] is None  # tiny.en detects nothing
        for seg in row["segments"]:
            assert -1.0 < seg["avg_logprob"] <= 0.0 and 0.0 <= seg["no_speech_prob"] < 0.6
            words = seg["words"]
            assert words and " ".join(w["word"] for w in words) == seg["transcript"]
            times = [t for w in words for t in (w["start_s"], w["end_s"])]
            assert times == sorted(times), f"{name}: word times out of order"
            assert seg["start_s"] <= times[0] and times[-1] <= seg["end_s"]
            assert all(0.0 < w["probability"] <= 1.0 for w in words)


@pytest.mark.slow
def test_the_gate_can_be_opened(files):
    ungated = Annotator(ModelSpec(family="whisper", checkpoint="tiny.en", min_speech_s=0), ASR)
    (outcome,) = ungated.annotate_files([files["n01_sweep.flac"]])
    assert ungated.model.stats.windows == len(files["n01_sweep.flac"])
    assert outcome.infer_s > 0.0
    # whatever tiny.en makes of a sweep, a row that keeps text from no speech is flagged
    row = outcome.fields
    assert row["transcript"] == "" or set(row["flags"]) & {"filler", "low_confidence"}


@pytest.mark.slow
def test_caption_still_runs_on_windows_without_speech(files, monkeypatch):
    """With asr and another task, a quiet window skips only asr (a counting stand-in for the
    second task's model call: Whisper takes asr only)."""
    annotator = Annotator(ModelSpec(family="whisper", checkpoint="tiny.en"), ASR)
    calls = []
    real = annotator.annotate_windows

    def spy(windows, tasks=None):
        calls.append(([w.audio_id for w in windows], [t.name for t in tasks]))
        return real(windows, [t for t in tasks if t.name == "asr"] or ASR)

    monkeypatch.setattr(annotator, "annotate_windows", spy)
    tasks = [*ASR, TaskRequest(name="mood", prompt="What mood?")]
    annotator.annotate_gated(files["n01_sweep.flac"] + files["s01_fox.wav"], tasks)
    assert (["s01_fox.wav"] * len(files["s01_fox.wav"]), ["asr", "mood"]) in calls
    assert (["n01_sweep.flac"] * len(files["n01_sweep.flac"]), ["mood"]) in calls


@pytest.mark.slow
def test_temperature_fallback_is_deterministic(files, monkeypatch):
    import earmark.models.whisper as whisper

    monkeypatch.setattr(whisper, "needs_fallback", lambda out: bool(out.text))
    model = WhisperModel()
    ws = files["s01_fox.wav"] + files["s10_meeting.mp3"]
    first = [o["asr"] for o in model.annotate(ws, ASR)]
    second = [o["asr"] for o in model.annotate(ws, ASR)]
    assert [o.text for o in first] == [o.text for o in second]
    assert all(o.temperature is not None for o in first)
    assert model.stats.encoder_passes > 2 * len(ws)  # every window was decoded again alone


@pytest.mark.slow
def test_copies_of_a_window_in_one_batch_each_keep_their_text(files):
    """Word alignment moves a segment's start to its first word, which may lie before its
    clip: segments are given back to their window by the clip they were decoded in."""
    model = WhisperModel(pack_windows=False)
    ws = (files["s01_fox.wav"] + files["s10_meeting.mp3"]) * 4
    texts = [o["asr"].text for o in model.annotate(ws, ASR)]
    assert len(set(texts[0::2])) == 1 and len(set(texts[1::2])) == 1, texts
    assert all(texts)


@pytest.mark.slow
def test_earmark_annotate_shows_the_gate_and_the_flags(demo_dir):
    import json

    from typer.testing import CliRunner

    from earmark.cli.main import app

    files = [str(demo_dir / "n01_sweep.flac"), str(demo_dir / "s01_fox.wav")]
    r = CliRunner().invoke(app, ["annotate", *files, "--model", "whisper:tiny.en", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    sweep, fox = rows
    assert (sweep["transcript"], sweep["speech_s"], sweep["flags"]) == ("", 0.0, ["no_speech"])
    assert fox["transcript"] and fox["flags"] == [] and fox["speech_s"] > 2.0
    # --min-speech-s 0 sends the sweep to the model; what comes back is its own rules' doing
    r = CliRunner().invoke(
        app, ["annotate", files[0], "--model", "whisper:tiny.en", "--json", "--min-speech-s", "0"]
    )
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert "no_speech" not in row["flags"] or row["segments"][0]["no_speech_prob"] > 0.6


@pytest.mark.slow
def test_a_multilingual_checkpoint_names_the_language_of_the_windows_with_speech(
    files, monkeypatch
):
    """No multilingual checkpoint can be had offline: tiny.en decodes, and faster-whisper's
    detect_language is the stand-in (asked once per window with text, its answer kept)."""
    from earmark.annotate.merge import merge_windows

    model = WhisperModel(pack_windows=False)
    model.multilingual, model.pack_windows = True, False
    asked = []

    def detect(audio):
        asked.append(len(audio))
        return ("de", 0.9, [("de", 0.9)])

    monkeypatch.setattr(model.model, "detect_language", lambda audio=None, **kw: detect(audio))
    ws = files["s01_fox.wav"] + files["s10_meeting.mp3"]
    outs = model.annotate(ws + [Window("q", 0, 0.0, 1.0, 16_000, WhisperModel.prepare(
        np.zeros(16_000, np.float32)))], ASR)  # fmt: skip
    # asked once per window with text; silence has no text to judge, and no language
    assert [o["asr"].language for o in outs] == ["de", "de", None]
    assert asked == [w.num_samples for w in ws]
    outs = outs[:2]
    row = merge_windows(ws, outs, ASR, "whisper")
    assert row["language"] == "de"
    assert merge_windows(ws, outs, ASR, "whisper", language="en")["language"] == "en"
