"""A model window: a stretch of one file's 16 kHz audio with its features already prepared.

Windows are cut on CPU workers (`earmark.audio.segment`) and travel to the model; they belong
to the audio, not to any model family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

SAMPLE_RATE = 16_000  # Hz: every family here consumes 16 kHz mono float32


@dataclass
class Window:
    """One model window of one file, with features already prepared on the CPU side."""

    audio_id: str
    index: int  # position of the window in its file
    start_s: float
    end_s: float
    num_samples: int  # real (unpadded) 16 kHz samples
    features: dict[str, np.ndarray] = field(default_factory=dict)
    # the speech regions silero-vad found [(start_s, end_s)], seconds from the window start;
    # None when speech was not measured
    speech: tuple[tuple[float, float], ...] | None = None

    @property
    def duration_s(self) -> float:
        return self.num_samples / SAMPLE_RATE

    @property
    def speech_s(self) -> float | None:
        """Seconds of speech in the window (the speech gate reads it), None when not measured."""
        return None if self.speech is None else sum(b - a for a, b in self.speech)

    @property
    def speech_fraction(self) -> float | None:
        """Share of the window that is speech (0-1), None when not measured."""
        if self.speech_s is None or self.num_samples <= 0:
            return None
        return min(1.0, self.speech_s / self.duration_s)


class WindowPreparer(Protocol):
    """What cutting a file into windows needs of a model family (an AudioModel class): the
    longest window it takes (`info.window_s`) and its CPU-side feature preparation."""

    info: Any

    def prepare(self, samples: np.ndarray) -> dict[str, np.ndarray]: ...
