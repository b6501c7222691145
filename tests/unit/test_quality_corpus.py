"""The quality benchmark's corpora: every non-speech kind is real audio of the asked length
that silero-vad hears no speech in; long speech files know where each sentence is."""

from __future__ import annotations

import numpy as np
import pytest

from earmark.bench.quality_corpus import KINDS, SR, non_speech_clip, speech_files


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_finite_audio_of_its_length(kind):
    x = non_speech_clip(kind, 3.0, np.random.default_rng(1))
    assert x.dtype == np.float32 and len(x) == 3 * SR
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= 1.0
    assert (np.abs(x).max() == 0) == (kind == "silence")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown non-speech kind 'speech'"):
        non_speech_clip("speech", 1.0, np.random.default_rng(0))


def test_silero_hears_no_speech_in_the_kinds():
    from earmark.audio.segment import silero_speech

    rng = np.random.default_rng(2)
    heard = {k: sum(e - s for s, e in silero_speech(non_speech_clip(k, 6.0, rng))) for k in KINDS}
    assert sum(heard.values()) / SR < 0.05 * 6.0 * len(KINDS), heard


def test_speech_files_know_their_sentences():
    clips = [np.concatenate([np.zeros(800), 0.5 * np.ones(8000), np.zeros(1600)])] * 3
    (f,) = speech_files([c.astype(np.float32) for c in clips], ["a", "b", "c"], 1, 3)
    assert f["text"] == "a b c"
    for start, end, _ in f["sentences"]:
        assert end - start == pytest.approx(0.5)
        s = int(round(start * SR))
        assert f["samples"][s] == 0.5 and f["samples"][s - 1] == 0.0
    starts = [s for s, _, _ in f["sentences"]]
    assert starts == sorted(starts)
