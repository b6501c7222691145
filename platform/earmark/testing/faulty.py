"""A model family that fails on purpose, the way real devices and kernels fail.

It is an ordinary `AudioModel` (reached as the family `earmark.testing.faulty.FaultyModel`),
so a job or a Serve replica runs it through the same Annotator, Ray actors and retries as a
real backend. Its "checkpoint" is a directory holding `faults.json`, which says when to fail
and how; the directory also records every load and every call (one line each, appended
atomically), so counts hold across the processes Ray starts and restarts.

faults.json fields (all optional):
    mode        "device_error" (a CUDA-style RuntimeError), "oom" (CUDA out of memory),
                "exit" (the process exits), "segfault" (a real SIGSEGV in native code),
                "input" (a ModelInputError)
    on_call     fail on the N-th call counted over all processes (once)
    on_samples  fail on every call holding a window of exactly this many samples
    oom_above   "oom" on every call holding more windows than this
    always      fail on every call
    after_marker  fail on every call once this file exists and is newer than the load
The text for a window is "<task>: <num_samples> samples".
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from earmark.audio.windows import Window
from earmark.contracts import FamilyInfo, TaskRequest
from earmark.models.base import AudioModel, BatchStats, ModelInputError, ModelLoadError

PLAN_NAME = "faults.json"
CALLS_LOG = "calls.log"  # one line per model call: pid, windows, samples
LOADS_LOG = "loads.log"  # one line per model load: pid


class FaultyModel(AudioModel):
    info = FamilyInfo(
        name="faulty",
        default_checkpoint="",
        window_s=30.0,
        audio_tokens_per_s=None,
        tasks=("asr", "caption", "tags", "custom"),
        module=__name__,
        cls="FaultyModel",
        description="fails on purpose (tests of the failure policy)",
    )
    required_files = (PLAN_NAME,)

    def __init__(self, checkpoint: str | None = None, **_: Any) -> None:
        # no torch: this stand-in has no weights and no device
        if not checkpoint:
            raise ModelLoadError(f"the faulty model needs a directory holding {PLAN_NAME}")
        self.checkpoint = checkpoint
        self.revision = None
        self.max_new_tokens = 8
        self.device, self.dtype_name = "cpu", "float32"
        self.stats = BatchStats()
        self.dir = Path(checkpoint)
        self.plan = json.loads((self.dir / PLAN_NAME).read_text())
        self.loaded_at = time.time()
        _append(self.dir / LOADS_LOG, f"{os.getpid()}")

    @classmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        return {"rms": np.sqrt(np.mean(np.square(samples), keepdims=True)).astype(np.float32)}

    def annotate(self, windows: list[Window], tasks: list[TaskRequest]) -> list[dict[str, str]]:
        n = _append(self.dir / CALLS_LOG, f"{os.getpid()} {[w.num_samples for w in windows]}")
        if self._should_fail(n, windows):
            self._fail(len(windows))
        return [{t.name: f"{t.name}: {w.num_samples} samples" for t in tasks} for w in windows]

    def _should_fail(self, call: int, windows: list[Window]) -> bool:
        p = self.plan
        marker = p.get("after_marker")
        return bool(
            p.get("always")
            or call == p.get("on_call")
            or any(w.num_samples == p.get("on_samples") for w in windows)
            or (p.get("oom_above") is not None and len(windows) > p["oom_above"])
            or (marker and os.path.exists(marker) and os.path.getmtime(marker) > self.loaded_at)
        )

    def _fail(self, n: int) -> None:
        mode = "oom" if self.plan.get("oom_above") is not None else self.plan.get("mode")
        if mode == "exit":
            os._exit(9)
        if mode == "segfault":
            ctypes.string_at(0)  # reads address 0: SIGSEGV in native code, no Python error
        if mode == "oom":
            raise RuntimeError(f"CUDA out of memory. Tried to allocate {n * 512} MiB")
        if mode == "input":
            raise ModelInputError("the tokenizer refused the prompt")
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def _append(path: Path, line: str) -> int:
    """Append one line (atomic for short lines with O_APPEND); returns the line count."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def write_plan(directory: str | os.PathLike[str], **plan: Any) -> str:
    """Create (or replace) a faulty checkpoint directory; returns its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / PLAN_NAME).write_text(json.dumps(plan))
    return str(d)


def calls(directory: str | os.PathLike[str]) -> list[str]:
    p = Path(directory) / CALLS_LOG
    return p.read_text().splitlines() if p.exists() else []


def loads(directory: str | os.PathLike[str]) -> list[str]:
    p = Path(directory) / LOADS_LOG
    return p.read_text().splitlines() if p.exists() else []
