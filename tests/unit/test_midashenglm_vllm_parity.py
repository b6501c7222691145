"""vLLM's MiDashengLM and earmark's, on one tiny checkpoint: the same prompts and audio give the
same greedy tokens and log-probabilities, on windows below the 3200-sample minimum, within one
encoder split (1008 frames, 10.08 s) and across two, each alone and all in one batch.

The checkpoint is `build_tiny_checkpoint("midashenglm")`, whose stand-in remote code follows the
real architecture that vLLM implements (vLLM builds its own modules from the same weights and
loads the checkpoint's processor). vLLM runs in its own environment (`make vllm-env`) through
`earmark.testing.vllm_run`; nothing here imports vllm. vLLM gets the raw audio and pads short
audio itself; earmark gets `MiDashengLMModel.prepare`'s features.

Batch invariance: vLLM's mel front end (the real model's) runs on the zero-padded batch, so the
frames within 256 samples of a shorter audio's end see zeros instead of the reflected signal.
That changes the window's output when a kept token reads such a frame (`tail_touched`): here
the 7 s window, 112000 samples, a multiple of 640 (the 0.1 s one ends in padding either way).
earmark's stand-in computes each mel alone (batch-invariant), as vLLM does for a prompt alone.
So the test compares like with like: each window alone in vLLM against earmark; in the batch,
the windows `tail_touched` spares against their solo runs too (SAME_ENCODING_ATOL); the touched
one against earmark within LOGPROB_ATOL only. Measured on CPU: earmark vs vLLM alone at most
3e-6; the 7 s window batched vs alone 1.8e-4 (asr) and 6e-5 (caption), tokens unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from earmark.audio import features as F
from earmark.contracts import TaskRequest
from earmark.models.midashenglm import MiDashengLMModel
from earmark.models.prompts import prompt_for
from earmark.testing.tiny import build_tiny_checkpoint
from earmark.testing.vllm_run import clip_windows, noise_clips, run_vllm

DURATIONS_S = (0.1, 1.5, 7.0, 14.0)  # under the minimum; one split; one; two
TASKS = [TaskRequest(name="asr"), TaskRequest(name="caption")]
MAX_TOKENS = 8
LOGPROB_ATOL = 1e-3  # earmark vs vLLM, float32 on both sides
SAME_ENCODING_ATOL = 2e-5  # vLLM alone vs batched where the audio encodes the same (~3e-6)
HOP, WIN = 160, 512  # the real front end's (n_fft = win_length = 512, centred)


def tail_touched(raw: int, longest: int) -> bool:
    """Whether batching an audio of `raw` samples with audio of `longest` samples changes what
    vLLM computes for it: the zeros after it replace the reflected signal in a mel frame that a
    valid (attended) patch or a patch read by a kept token holds."""
    n = max(raw, F.DASHENG_MIN_SAMPLES)  # vLLM pads shorter audio with zeros, as prepare does
    if n >= longest or raw < n - WIN // 2:  # not padded; or it ends in padding (reflects zeros)
        return False
    valid_patches = n // (4 * HOP)
    read_patches = 5 * F.dasheng_num_tokens(n)
    last_frame = 4 * max(valid_patches, read_patches) - 1
    return last_frame * HOP + WIN // 2 > n


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_tiny_checkpoint("midashenglm", tmp_path_factory.mktemp("mdl_vllm") / "tiny")


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> list[Path]:
    return noise_clips(tmp_path_factory.mktemp("audio"), DURATIONS_S)


@pytest.mark.slow
def test_vllm_midashenglm_equals_earmark(ckpt, audio, tmp_path):
    model = MiDashengLMModel(str(ckpt), device="cpu", max_new_tokens=MAX_TOKENS)
    windows = clip_windows(audio, MiDashengLMModel)
    ours = model.trace(windows, TASKS)
    texts = [model.render(prompt_for("midashenglm", t)) for t in TASKS]
    prompts = [{"prompt": text, "audio": str(p)} for p in audio for text in texts]
    # the batch first, then each prompt alone (no call reuses another's encoder outputs)
    start, got = run_vllm(ckpt, [prompts, *[[p] for p in prompts]], tmp_path, max_tokens=MAX_TOKENS)
    print(start, file=sys.stderr)  # engine start time
    by_call = {(g["call"], g["index"]): g for g in got}
    lengths = [w.features["input_values"].size for w in windows]  # ≥ 3200, as vLLM pads
    touched = [tail_touched(w.num_samples, max(lengths)) for w in windows]
    assert touched == [False, False, True, False]  # the test covers both kinds
    distinct, gaps, diffs = set(), {}, {"alone": 0.0, "batched": 0.0}
    for w, win in enumerate(windows):
        for t, task in enumerate(TASKS):
            k = w * len(TASKS) + t
            mine = ours[w][task.name]
            alone, batched = by_call[(1 + k, 0)], by_call[(0, k)]
            n_prompt = len(model.prompt_ids(task, lengths[w]))
            for theirs in (alone, batched):
                where = f"window {w} ({win.duration_s} s), {task.name}, call {theirs['call']}"
                assert theirs["prompt_tokens"] == n_prompt, where
                assert theirs["ids"] == mine.ids, where
                assert theirs["finish"] == ("stop" if mine.stopped else "length"), where
                np.testing.assert_allclose(
                    theirs["logprobs"], mine.logprobs, atol=LOGPROB_ATOL, err_msg=where
                )
                diff = float(np.abs(np.subtract(theirs["logprobs"], mine.logprobs)).max())
                kind = "alone" if theirs is alone else "batched"
                diffs[kind] = max(diffs[kind], diff)
            gap = float(np.abs(np.subtract(alone["logprobs"], batched["logprobs"])).max())
            gaps[(win.duration_s, task.name)] = gap
            if not touched[w]:
                assert gap <= SAME_ENCODING_ATOL, f"window {w}, {task.name}: {gap:.2e}"
            distinct.add(tuple(mine.ids))
    print("vLLM alone vs batched:", {k: f"{v:.1e}" for k, v in gaps.items()}, file=sys.stderr)
    print("vLLM vs earmark:", {k: f"{v:.1e}" for k, v in diffs.items()}, file=sys.stderr)
    assert len(distinct) > len(windows)  # the audio and the task change the tokens
