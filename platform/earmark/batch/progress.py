"""Plain progress lines for runs whose stdout is not a terminal (submitted jobs, `| tee`, CI).

A rich bar only redraws on a terminal; elsewhere it prints once, when the job ends, so
`earmark jobs logs --follow` showed nothing for the whole run. These lines are printed on a
timer, not per batch, so a slow batch (a model load, a long file) still shows the job is alive.
`earmark jobs status` finds the latest one in the job's logs by its prefix.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

PREFIX = "earmark progress:"
INTERVAL_ENV = "EARMARK_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0
MIN_INTERVAL_S = 0.1  # a lower value would flood the job's logs, not make it more visible


@dataclass(frozen=True)
class Snapshot:
    done: int
    total: int
    audio_s: float
    errors: int
    elapsed_s: float
    listing: bool = False  # the source is still being listed: `total` will grow


def interval_s() -> float:
    """Seconds between lines: EARMARK_PROGRESS_INTERVAL_S, else 10; bad values fall back."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= MIN_INTERVAL_S else DEFAULT_INTERVAL_S


def format_line(s: Snapshot) -> str:
    """One line with files done/total, audio hours, errors, both rates and the elapsed time.
    While the source is still being listed the total is what was found so far: `N+ files`."""
    wall = max(s.elapsed_s, 1e-9)
    pct = 100.0 * s.done / s.total if s.total else 100.0
    counts = f"{s.total}+ files (listing)" if s.listing else f"{s.total} files ({pct:.0f}%)"
    return (
        f"{PREFIX} {s.done}/{counts}, {s.audio_s / 3600:.3f} audio h, "
        f"{s.errors} errors, {s.done / wall:.2f} files/s, "
        f"{s.audio_s / wall:.1f} audio h/wall h, elapsed {_clock(s.elapsed_s)}"
    )


def latest_line(log_text: str) -> str | None:
    """The last progress line in a job's logs, or None before the first one."""
    for line in reversed(log_text.splitlines()):
        start = line.find(PREFIX)
        if start >= 0:
            return line[start:].strip()
    return None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _print_line(line: str) -> None:
    # flushed at once: Ray copies the driver's stdout into the job's logs as it is written
    print(line, file=sys.stdout, flush=True)


class ProgressLines:
    """Prints a progress line when entered, every `interval` seconds from a timer thread, and
    once more on exit. `update` takes running totals from the thread consuming the dataset."""

    def __init__(
        self,
        total: int,
        interval: float | None = None,
        write: Callable[[str], object] = _print_line,
        listing: bool = False,
    ) -> None:
        self._total = total
        self._interval = interval if interval is not None else interval_s()
        self._write = write
        self._lock = threading.Lock()
        self._done, self._audio_s, self._errors = 0, 0.0, 0
        self._listing = listing
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="earmark-progress", daemon=True)

    def update(
        self,
        done: int,
        audio_s: float,
        errors: int,
        total: int | None = None,
        listing: bool = False,
    ) -> None:
        """Running totals; `total` grows while the source is still being listed (`listing`)."""
        with self._lock:
            self._done, self._audio_s, self._errors = done, audio_s, errors
            self._listing = listing
            if total is not None:
                self._total = total

    def snapshot(self) -> Snapshot:
        with self._lock:
            done, audio_s, errors = self._done, self._audio_s, self._errors
            total, listing = self._total, self._listing
        return Snapshot(done, total, audio_s, errors, time.monotonic() - self._t0, listing)

    def __enter__(self) -> ProgressLines:
        self._t0 = time.monotonic()
        self._emit()  # at once: the job has started and how many files it has to do
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._emit()  # also after a failure: where the job got to

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            self._emit()

    def _emit(self) -> None:
        self._write(format_line(self.snapshot()))
