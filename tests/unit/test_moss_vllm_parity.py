"""vLLM's MOSS-Audio and earmark's, on one tiny checkpoint (issue #17's "parity first"): the
same prompts and audio give the same greedy tokens and log-probabilities, on windows shorter
and longer than the encoder's 4-s chunk, each alone and all in one batch.

vLLM runs in its own environment (`make vllm-env`, which `make test` builds): its torch and
transformers cannot share the project's. The vLLM side is `earmark/testing/vllm_generate.py`
run by that environment's Python; nothing here imports vllm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from earmark.audio.windows import Window
from earmark.contracts import TaskRequest
from earmark.models.moss import MossModel, audio_token_count
from earmark.testing import vllm_generate
from earmark.testing.tiny_moss import build_tiny_moss

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("EARMARK_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
DURATIONS_S = (1.5, 4.5, 9.0)  # one chunk; two (the second nearly empty); three
TASKS = [TaskRequest(name="asr"), TaskRequest(name="caption")]
MAX_TOKENS = 8
PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
LOGPROB_ATOL = 1e-3  # float32 on both sides; measured differences are ~1e-5


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    # a large init spread, so random weights give distinct tokens for distinct audio
    return build_tiny_moss(tmp_path_factory.mktemp("moss_vllm"), vllm_ready=True, init_std=0.5)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(7)
    paths = []
    for i, d in enumerate(DURATIONS_S):
        x = (0.1 * rng.standard_normal(int(d * 16_000))).astype(np.float32)
        np.save(folder / f"w{i}.npy", x)
        paths.append(folder / f"w{i}.npy")
    return paths


def run_vllm(ckpt: Path, calls: list[list[dict]], tmp_path: Path) -> list[dict]:
    if not VLLM_PYTHON.exists():
        pytest.fail(f"{VLLM_PYTHON} does not exist: run `make vllm-env` (make test does)")
    req = tmp_path / "request.json"
    req.write_text(json.dumps({"model": str(ckpt), "max_tokens": MAX_TOKENS, "calls": calls}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(VLLM_PYTHON), vllm_generate.__file__, str(req)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    print(lines[0], file=sys.stderr)  # engine start time, for the README
    return lines[1:]


@pytest.mark.slow
def test_vllm_moss_equals_earmark_moss(ckpt, audio, tmp_path):
    model = MossModel(str(ckpt), device="cpu", max_new_tokens=MAX_TOKENS)
    windows = []
    for i, p in enumerate(audio):
        x = np.load(p)
        windows.append(Window("a", i, 0.0, len(x) / 16_000, len(x), MossModel.prepare(x)))
    ours = model.annotate_rows(windows, TASKS)
    prompts = [
        {"prompt": head + PLACEHOLDER + tail, "audio": str(p)}
        for p in audio
        for head, tail in [MossModel.chat_halves(t) for t in TASKS]
    ]
    alone = [[p] for p in prompts]
    got = run_vllm(ckpt, [*alone, prompts], tmp_path)
    by_call = {(g["call"], g["index"]): g for g in got}
    batch_call = len(alone)
    distinct = set()
    for w, win in enumerate(windows):
        for t, task in enumerate(TASKS):
            k = w * len(TASKS) + t
            ids, lps, stopped = ours[w][t]
            # same audio token count, time markers included
            n_prompt = len(model.prompt_ids(task, audio_token_count(win.features["mel"].shape[1])))
            for theirs in (by_call[(k, 0)], by_call[(batch_call, k)]):
                where = f"window {w} ({win.duration_s} s), {task.name}"
                assert theirs["prompt_tokens"] == n_prompt, where
                assert theirs["ids"][: len(ids)] == ids, where
                assert theirs["finish"] == ("stop" if stopped else "length"), where
                np.testing.assert_allclose(
                    theirs["logprobs"][: len(ids)], lps[: len(ids)], atol=LOGPROB_ATOL
                )
            distinct.add(tuple(ids))
    assert len(distinct) > len(windows)  # the audio and the task change the tokens
