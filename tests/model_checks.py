"""Checks shared by the tests of the transformers backends (eureka, midashenglm)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from earmark.audio.windows import Window
from earmark.models import hf_generate as G

SR = 16_000  # Hz


def seeded_samples(n: int, seed: int) -> np.ndarray:
    """A seeded tone-plus-noise clip of n samples (each seed gives other audio)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.2 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.1 * rng.standard_normal(n)
    return x.astype(np.float32)


def window_of(model_cls: Any, n: int, i: int = 0) -> Window:
    """Window i of n samples with features prepared by `model_cls`."""
    return Window("a.wav", i, 0.0, n / SR, n, model_cls.prepare(seeded_samples(n, i)))


def copy_checkpoint(ckpt: Path, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(ckpt, dst)
    return dst


def assert_tasks_share_one_audio_prefill(
    model: Any, lm: Any, windows: list, tasks: list, mp
) -> None:
    """Tasks whose prompts agree before the audio prefill each window's audio once, and each
    task's result equals the result of asking it alone."""
    calls: list[int] = []
    body = lm.model
    original = body.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("inputs_embeds") is not None:  # the audio prefix prefill
            calls.append(kwargs["inputs_embeds"].shape[0])
        return original(*args, **kwargs)

    mp.setattr(body, "forward", counting)
    together = model.trace(windows, tasks)
    assert calls == [len(windows)], f"audio prefills (rows each): {calls}"
    for t in tasks:
        alone = model.trace(windows, [t])
        for i in range(len(windows)):
            problem = G.compare_traces(alone[i][t.name], together[i][t.name])
            assert problem is None, f"window {i}, {t.name}: {problem}"
