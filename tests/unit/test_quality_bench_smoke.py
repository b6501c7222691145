"""`earmark bench quality` at minimal sizes: every figure it prints is computed, and the gate's
non-speech files get no text (the real tiny.en and silero-vad, no Ray)."""

from __future__ import annotations

import json

import pytest

from earmark.bench.quality_bench import bench_quality


@pytest.mark.slow
def test_quality_bench_smoke(tmp_path, capsys, monkeypatch, demo_dir):
    monkeypatch.setattr("earmark.bench.corpus.SPEECH_DIR", demo_dir)
    out = tmp_path / "q.json"
    res = bench_quality(clips=12, speech_files_n=1, workdir=str(tmp_path / "w"), json_path=out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    gate, open_ = res["nonspeech"]["gate"], res["nonspeech"]["no gate"]
    assert gate["files_with_text"] == 0 and gate["flagged"] == 12
    assert open_["model_s"] > gate["model_s"]
    assert res["speech"]["gate"]["wer"] <= 0.05  # tiny.en on clean TTS speech
    t = res["timings"]
    assert t["segments_ordered"] == t["segments_inside"] == t["segments"] > 0
    assert t["boundaries"] == 16 and t["sentences_without_words"] == 0
    m = res["mixed"]
    assert m["model_s"]["gate"] < m["model_s"]["no gate"] and 0 < m["fall"] < 1
    cap = capsys.readouterr()
    printed = cap.out + cap.err
    assert "files with ASR text" in printed and "falls by" in printed
