"""faster-whisper segments → one window's TaskText, and the guards of Whisper's own decoding
loop that the batched pipeline skips (openai/whisper `transcribe.py`, faster-whisper's
sequential `generate_with_fallback`; thresholds are their defaults):

- no speech: a segment whose no-speech probability is above 0.6 while its mean log-probability
  is at most -1.0 is dropped (its text is not speech) and the window flagged `no_speech`;
- fallback: a window whose text compresses above 2.4 (zlib ratio) or whose mean log-probability
  is below -1.0 is decoded again on its own with the temperature schedule 0.0, 0.2, ..., 1.0,
  the sampler seeded with `FALLBACK_SEED` first, so the same window always gives the same text.

Pure functions over duck-typed segments (`.start .end .text .avg_logprob .no_speech_prob
.words`), so the rules are tested without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from earmark.models.quality import COMPRESSION_RATIO_MAX, compression_ratio
from earmark.models.result import TaskText, Word

NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
FALLBACK_SEED = 1234  # sampler seed before every fallback decode: same window, same text


def is_no_speech(seg: Any) -> bool:
    """faster-whisper's sequential rule: the no-speech token won and the text is unsure."""
    return seg.no_speech_prob > NO_SPEECH_THRESHOLD and seg.avg_logprob <= LOG_PROB_THRESHOLD


def window_text(
    segments: Sequence[Any],
    offset_s: float,
    duration_s: float,
    with_words: bool,
    temperature: float | None = 0.0,
) -> TaskText:
    """One window's TaskText from its segments (times in the decoded input, the window starting
    at `offset_s`): kept texts joined; mean log-probability over the kept segments (weighted by
    their tokens); the highest no-speech probability; with_words: the words moved to window
    time and clipped to it (empty when nothing was said); `no_speech` when the no-speech rule
    dropped every segment that had text."""
    kept = [s for s in segments if s.text.strip() and not is_no_speech(s)]
    dropped = any(s.text.strip() and is_no_speech(s) for s in segments)
    nsp = max((float(s.no_speech_prob) for s in segments), default=None)
    words: tuple[Word, ...] | None = () if with_words else None
    if with_words and kept and all(getattr(s, "words", None) is not None for s in kept):
        words = tuple(
            Word(
                word=w.word.strip(),
                start_s=min(max(w.start - offset_s, 0.0), duration_s),
                end_s=min(max(w.end - offset_s, 0.0), duration_s),
                probability=float(w.probability),
            )
            for s in kept
            for w in s.words
            if w.word.strip()
        )
    if not kept:
        flags = ("no_speech",) if dropped else ()
        return TaskText("", no_speech_prob=nsp, words=words, temperature=temperature, flags=flags)
    weights = [max(1, len(getattr(s, "tokens", None) or [])) for s in kept]
    avg = sum(s.avg_logprob * w for s, w in zip(kept, weights, strict=True)) / sum(weights)
    return TaskText(
        text=" ".join(s.text.strip() for s in kept),
        avg_logprob=float(avg),
        no_speech_prob=nsp,
        words=words,
        temperature=temperature,
    )


def needs_fallback(out: TaskText) -> bool:
    """Whisper's re-decode test: the text repeats (compression) or the decoder was unsure."""
    if not out.text.strip() or "no_speech" in out.flags:
        return False
    if compression_ratio(out.text) > COMPRESSION_RATIO_MAX:
        return True
    return out.avg_logprob is not None and out.avg_logprob < LOG_PROB_THRESHOLD
