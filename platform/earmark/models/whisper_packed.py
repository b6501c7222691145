"""Packed Whisper decodes: several short windows laid end to end in one 30 s input
(`whisper_pack` plans the packs and splits the text back), decoded with timestamps by
CTranslate2 directly. A placed window's confidence is its pack's (one decode: faster-whisper's
avg_logprob from the CT2 score); its words are aligned over the pack's whole text with
faster-whisper's cross-attention alignment and moved to the window's time. Functions take the
loaded `WhisperModel` (its faster-whisper model, tokenizer and prompt)."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from earmark.audio.windows import SAMPLE_RATE
from earmark.models.result import TaskText
from earmark.models.whisper_pack import Pack, assign_pack, parse_timestamped
from earmark.models.whisper_pack import Segment as PackSegment
from earmark.models.whisper_result import window_text

MAX_DECODE_TOKENS = 440  # Whisper's decoder holds 448 positions, a few go to the prompt
# faster-whisper's defaults for gluing punctuation to the word beside it in word timings
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


def decode_packs(
    self: Any, audios: list[np.ndarray], packs: list[Pack]
) -> tuple[dict[int, TaskText], list[int]]:
    """Decode each pack with timestamps; the windows placed with certainty, and the rest.
    A placed window's confidence is its pack's (one decode), its words are aligned over
    the pack and moved to the window's time."""
    resolved: dict[int, TaskText] = {}
    redo: list[int] = []
    for first in range(0, len(packs), self.batch_size):
        group = packs[first : first + self.batch_size]
        done, back = _decode_group(self, audios, group)
        resolved.update(done)
        redo.extend(back)
    return resolved, redo


def _decode_group(
    self: Any, audios: list[np.ndarray], group: list[Pack]
) -> tuple[dict[int, TaskText], list[int]]:
    from faster_whisper.audio import pad_or_trim

    tok, prompt = self.tokenizer, self.pack_prompt
    feats, durations = [], []
    for pack in group:
        gap = np.zeros(pack.gap_samples, dtype=np.float32)
        joined = np.concatenate([x for i in pack.members for x in (audios[i], gap)])
        feats.append(pad_or_trim(self.model.feature_extractor(joined)[..., :-1]))
        durations.append(len(joined) / SAMPLE_RATE)
    encoded = self.model.encode(np.stack(feats))
    budget = max(len(p.members) for p in group) * self.max_new_tokens
    results = self.model.model.generate(
        encoded,
        [list(prompt) for _ in group],
        beam_size=self.beam_size,
        max_length=len(prompt) + min(budget, MAX_DECODE_TOKENS),
        suppress_blank=True,
        suppress_tokens=self.suppress_tokens,
        sampling_temperature=0.0,
        return_scores=True,
        return_no_speech_prob=True,
    )
    parsed = [
        parse_timestamped(
            r.sequences_ids[0],
            tok.timestamp_begin,
            tok.eot,
            self.model.time_precision,
            tok.decode,
        )
        for r in results
    ]
    words = _pack_words(self, parsed, encoded, durations) if self.word_timestamps else None
    resolved: dict[int, TaskText] = {}
    redo: list[int] = []
    for p, (pack, result, (segments, unclosed)) in enumerate(
        zip(group, results, parsed, strict=True)
    ):
        assigned, back = assign_pack(pack, segments, unclosed)
        redo.extend(back)
        n = len(result.sequences_ids[0])
        # faster-whisper's avg_logprob from a CT2 score (length_penalty 1)
        avg = result.scores[0] * n / (n + 1) if result.scores else None
        for k, member in enumerate(pack.members):
            if member not in assigned:
                continue
            start, end = pack.spans_s[k]
            pieces = [
                _as_segment(
                    segments[j],
                    words[p][j] if words is not None else None,
                    avg if avg is not None else 0.0,
                    result.no_speech_prob,
                )
                for j in assigned[member]
            ]
            resolved[member] = window_text(pieces, start, end - start, self.word_timestamps)
    return resolved, redo


def _pack_words(
    self: Any,
    parsed: list[tuple[list[PackSegment], float | None]],
    encoded: Any,
    durations: list[float],
) -> list[list[list[Any]]]:
    """Words per pack and segment (pack times), aligned over each pack's whole text."""
    from faster_whisper.transcribe import Word as FWWord

    batch = [
        [
            {"tokens": list(seg.tokens), "start": seg.start_s, "end": seg.end_s, "seek": 0}
            for seg in segments
        ]
        or [{"tokens": [], "start": 0.0, "end": 0.0, "seek": 0}]
        for segments, _ in parsed
    ]
    frames = [int(math.ceil(d) * self.model.frames_per_second) for d in durations]
    self.model.add_word_timestamps(
        batch, self.tokenizer, encoded, frames, PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, 0.0
    )
    return [[[FWWord(**w) for w in seg.get("words", [])] for seg in segs] for segs in batch]


def align_window(self: Any, audio: np.ndarray, segments: list[Any]) -> list[Any]:
    """faster-whisper segments of one window decoded alone, with their words aligned by one
    more encoder pass (the sequential decoder, asked for words, seeks to the last word's end
    and decodes the silence after it into ". . ."; so it decodes without, and words come here).
    """
    from faster_whisper.audio import pad_or_trim

    eot = self.tokenizer.eot
    pieces = [
        PackSegment(s.start, s.end, s.text, tuple(t for t in s.tokens if t < eot)) for s in segments
    ]
    if not any(p.tokens for p in pieces):
        return segments
    feats = pad_or_trim(self.model.feature_extractor(audio)[..., :-1])
    encoded = self.model.encode(feats[None])
    words = _pack_words(self, [(pieces, None)], encoded, [len(audio) / SAMPLE_RATE])[0]
    return [replace(s, words=w) for s, w in zip(segments, words, strict=True)]


def _as_segment(
    seg: PackSegment, words: list[Any] | None, avg_logprob: float, no_speech_prob: float
) -> Any:
    """A packed segment in the shape `window_text` reads (faster-whisper's Segment fields)."""
    return SimpleNamespace(
        start=seg.start_s,
        end=seg.end_s,
        text=seg.text,
        tokens=seg.tokens,
        avg_logprob=avg_logprob,
        no_speech_prob=no_speech_prob,
        words=words,
    )
