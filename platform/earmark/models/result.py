"""What a model says about one (window, task): the text, and what the decoder knows about it.

`AudioModel.annotate` returns, per window, a dict task name → `TaskText` (a plain string is read
as a TaskText with nothing else known, so simple backends and test fakes stay simple). The merge
(`earmark.annotate.merge`) turns these into row values; the checks that flag suspicious text
(`earmark.models.quality`) read them. Nothing here is estimated: a field a backend cannot
measure stays None.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """One word with its time in the WINDOW (seconds from the window start)."""

    word: str
    start_s: float
    end_s: float
    probability: float | None = None  # the decoder's probability of the word's tokens


@dataclass(frozen=True)
class TaskText:
    """One task's output for one window."""

    text: str
    # mean natural-log probability of the generated tokens (the end token included), each taken
    # from the distribution greedy decoding picked it from; None when the backend cannot tell
    avg_logprob: float | None = None
    # Whisper: probability of its no-speech token at the start of the decode
    no_speech_prob: float | None = None
    truncated: bool = False  # generation stopped at the token limit, not at an end token
    words: tuple[Word, ...] | None = None  # None: this backend gives no word times
    # timed pieces inside the window [(start_s, end_s, text)] (MOSS time markers); None: none
    spans: tuple[tuple[float, float, str], ...] | None = None
    language: str | None = None  # language the decoder detected (multilingual Whisper)
    temperature: float | None = None  # sampling temperature of the decode kept (Whisper)
    flags: tuple[str, ...] = field(default=())  # flags the backend itself raised (no_speech)


def as_task_text(value: TaskText | str | None) -> TaskText:
    """A backend's value for one task as a TaskText (strings and None are plain text)."""
    if isinstance(value, TaskText):
        return value
    return TaskText(text="" if value is None else str(value))


def mean_logprob(values: list[float]) -> float | None:
    """Mean of per-token log-probabilities, None for no tokens."""
    return None if not values else float(sum(values) / len(values))
