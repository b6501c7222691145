"""Quality flags on generated text (earmark.models.quality) and Whisper's decode guards
(earmark.models.whisper_result), as pure functions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from earmark.models.quality import (
    compression_ratio,
    flags_for,
    is_filler,
    is_repetitive,
    longest_repeat,
    merge_flags,
)
from earmark.models.result import TaskText
from earmark.models.whisper_result import is_no_speech, needs_fallback, window_text


def test_compression_ratio_is_whispers():
    assert compression_ratio("") == 0.0
    assert compression_ratio("the cat sat on the mat") < 1.5
    assert compression_ratio("thank you " * 30) > 2.4


@pytest.mark.parametrize(
    "text",
    [
        "I don't know. I don't know. I don't know. I don't know.",
        "thank you " * 20,
        "la la la la la la la la la",
        "我们我们我们我们我们我们我们我们",
    ],
)
def test_repetition_is_flagged(text):
    assert is_repetitive(text)
    assert "repetition" in flags_for(TaskText(text), asr=True)


@pytest.mark.parametrize(
    "text",
    [
        "no no no no",  # people do say this
        "The quick brown fox jumps over the lazy dog near the bank of the river.",
        "We need to talk about the budget, the schedule, and the budget again.",
    ],
)
def test_speech_that_repeats_a_little_is_not_flagged(text):
    assert not is_repetitive(text)


def test_longest_repeat_finds_the_ngram():
    assert longest_repeat("a b c a b c a b c x".split()) == (3, 3)
    assert longest_repeat("x y z".split()) == (1, 1)


@pytest.mark.parametrize("text", ["You", " you.", "Thank you.", "Thanks for watching!", "♪ ♪"])
def test_fillers_are_flagged_for_asr_only(text):
    assert is_filler(text)
    assert "filler" in flags_for(TaskText(text), asr=True)
    assert "filler" not in flags_for(TaskText(text), asr=False)  # a caption may say "music"


@pytest.mark.parametrize("text", ["", "You are late.", "thank you all for coming"])
def test_speech_is_not_a_filler(text):
    assert not is_filler(text)


def test_truncation_confidence_and_backend_flags():
    assert flags_for(TaskText("words", truncated=True), asr=False) == ["truncated"]
    assert flags_for(TaskText("words", avg_logprob=-1.2), asr=True) == ["low_confidence"]
    assert flags_for(TaskText("words", avg_logprob=-0.2), asr=True) == []
    assert flags_for(TaskText("", flags=("no_speech",)), asr=True) == ["no_speech"]
    # an empty text is never low-confidence or repetitive: there is nothing to distrust
    assert flags_for(TaskText("", avg_logprob=-5.0), asr=True) == []
    assert merge_flags(["truncated"], None, ["no_speech", "truncated"]) == [
        "no_speech",
        "truncated",
    ]


def seg(text, start, end, lp=-0.3, nsp=0.1, words=None, tokens=(1, 2, 3)):
    return SimpleNamespace(
        text=text,
        start=start,
        end=end,
        avg_logprob=lp,
        no_speech_prob=nsp,
        words=words,
        tokens=tokens,
    )


def word(w, a, b, p=0.9):
    return SimpleNamespace(word=w, start=a, end=b, probability=p)


def test_window_text_keeps_speech_drops_no_speech_and_moves_words():
    words = [word(" Hello", 10.1, 10.4), word(" there.", 10.5, 10.9)]
    out = window_text(
        [seg(" Hello there.", 10.0, 11.0, words=words), seg(" You", 11.0, 12.0, -1.5, 0.9)],
        offset_s=10.0,
        duration_s=2.0,
        with_words=True,
    )
    assert out.text == "Hello there."
    assert out.avg_logprob == pytest.approx(-0.3) and out.no_speech_prob == pytest.approx(0.9)
    assert [(w.word, round(w.start_s, 2), round(w.end_s, 2)) for w in out.words] == [
        ("Hello", 0.1, 0.4),
        ("there.", 0.5, 0.9),
    ]
    silent = window_text([seg(" You", 0.0, 1.0, -1.5, 0.9)], 0.0, 1.0, with_words=True)
    assert silent.text == "" and silent.flags == ("no_speech",) and silent.words == ()
    assert window_text([], 0.0, 1.0, with_words=False).words is None


def test_is_no_speech_needs_both_tests():
    assert is_no_speech(seg("x", 0, 1, lp=-1.5, nsp=0.7))
    assert not is_no_speech(seg("x", 0, 1, lp=-0.5, nsp=0.7))  # sure of its words: speech
    assert not is_no_speech(seg("x", 0, 1, lp=-1.5, nsp=0.3))


def test_fallback_is_asked_for_repetition_or_low_confidence_only():
    assert needs_fallback(TaskText("thank you " * 30, avg_logprob=-0.1))
    assert needs_fallback(TaskText("a plain sentence", avg_logprob=-1.4))
    assert not needs_fallback(TaskText("a plain sentence", avg_logprob=-0.4))
    assert not needs_fallback(TaskText("", avg_logprob=-3.0))
    assert not needs_fallback(TaskText("x", avg_logprob=-3.0, flags=("no_speech",)))
