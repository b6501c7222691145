"""Run `vllm_generate.py` in vLLM's own environment from the project's Python (parity tests).

vLLM's torch and transformers cannot share the project's, so `make vllm-env` builds
`.venv-vllm` (override with EARMARK_VLLM_PYTHON) and this module only starts its Python on a
request file; nothing here imports vllm.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from earmark.models.base import ModelLoadError
from earmark.models.vllm_engine import child_env, vllm_python
from earmark.testing import vllm_generate

SAMPLE_RATE = 16_000


class VllmRunError(RuntimeError):
    pass


def run_vllm(
    ckpt: str | Path,
    calls: list[list[dict[str, str]]],
    workdir: str | Path,
    *,
    max_tokens: int,
    timeout_s: float = 600,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One engine over `calls` (see vllm_generate.py): ({"engine_start_s": ...}, one dict per
    prompt with "call", "index", "prompt_tokens", "ids", "logprobs", "finish")."""
    try:
        python = vllm_python()
    except ModelLoadError as exc:
        raise VllmRunError(str(exc)) from None
    workdir = Path(workdir)
    req = workdir / "request.json"
    req.write_text(json.dumps({"model": str(ckpt), "max_tokens": max_tokens, "calls": calls}))
    proc = subprocess.run(
        [str(python), vllm_generate.__file__, str(req)],
        capture_output=True, text=True, timeout=timeout_s, env=child_env(), cwd=workdir,
    )  # fmt: skip
    if proc.returncode != 0:
        raise VllmRunError(f"vLLM exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return lines[0], lines[1:]


def noise_clips(folder: str | Path, durations_s: Sequence[float], seed: int = 7) -> list[Path]:
    """Fixed-seed noise clips (16 kHz float32 .npy), one per duration, the audio both sides of
    a parity test read."""
    import numpy as np

    rng = np.random.default_rng(seed)
    paths = []
    for i, d in enumerate(durations_s):
        x = (0.1 * rng.standard_normal(round(d * SAMPLE_RATE))).astype(np.float32)
        np.save(Path(folder) / f"w{i}.npy", x)
        paths.append(Path(folder) / f"w{i}.npy")
    return paths


def clip_windows(paths: Sequence[Path], model_cls: Any) -> list[Any]:
    """One Window per clip, features from `model_cls.prepare`."""
    import numpy as np

    from earmark.audio.windows import Window

    out = []
    for i, p in enumerate(paths):
        x = np.load(p)
        out.append(Window("a", i, 0.0, len(x) / SAMPLE_RATE, len(x), model_cls.prepare(x)))
    return out
