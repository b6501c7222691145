"""vLLM's MOSS-Audio and earmark's, on one tiny checkpoint (issue #17's "parity first"): the
same prompts and audio give the same greedy tokens and log-probabilities, on windows shorter
and longer than the encoder's 4-s chunk, each alone and all in one batch.

vLLM's batch is not batch-invariant for a clip of one chunk (shorter than 4 s): its encoder pads
the chunks of all clips in the batch to the widest one, so that clip's chunk is zero-padded to
400 mel frames, and the conv stem (whose zero input gives gelu(bias), not zero) carries the
padding into its last real frames. Alone (and in earmark, which follows the reference run of a
clip alone) a one-chunk clip has no padding. So the test compares like with like: every window
alone, and in the batch the windows `padded_in_batch` leaves alone, against earmark; the 1.5 s
window batched is only measured (log-probs up to 0.22 away, tokens unchanged over 8). Each
vLLM call encodes its audio afresh (vllm_generate.py); an earlier version ran the batch after
the solo calls and reused their cached encodings, which hid this.

vLLM runs in its own environment (`make vllm-env`, which `make test` builds): its torch and
transformers cannot share the project's. The vLLM side is `earmark/testing/vllm_generate.py`
run by that environment's Python (`earmark.testing.vllm_run`); nothing here imports vllm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from earmark.contracts import TaskRequest
from earmark.models.moss import MossModel, audio_token_count
from earmark.testing.tiny_moss import build_tiny_moss
from earmark.testing.vllm_run import clip_windows, noise_clips, run_vllm

DURATIONS_S = (1.5, 4.5, 9.0)  # one chunk; two (the second nearly empty); three
TASKS = [TaskRequest(name="asr"), TaskRequest(name="caption")]
MAX_TOKENS = 8
PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
LOGPROB_ATOL = 1e-3  # float32 on both sides; measured differences are ~3e-5
CHUNK_FRAMES = 400  # 2 × n_window (200, the release's and the tiny config's) mel frames


def padded_in_batch(frames: int, widest: int) -> bool:
    """Whether vLLM pads the (single) chunk of a clip of `frames` mel frames in a batch whose
    widest chunk is `widest` frames; a clip of several chunks is padded alone too."""
    return frames < min(widest, CHUNK_FRAMES)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    # a large init spread, so random weights give distinct tokens for distinct audio
    return build_tiny_moss(tmp_path_factory.mktemp("moss_vllm"), vllm_ready=True, init_std=0.5)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> list[Path]:
    return noise_clips(tmp_path_factory.mktemp("audio"), DURATIONS_S)


@pytest.mark.slow
def test_vllm_moss_equals_earmark_moss(ckpt, audio, tmp_path):
    model = MossModel(str(ckpt), device="cpu", max_new_tokens=MAX_TOKENS)
    windows = clip_windows(audio, MossModel)
    ours = model.annotate_rows(windows, TASKS)
    prompts = [
        {"prompt": head + PLACEHOLDER + tail, "audio": str(p)}
        for p in audio
        for head, tail in [MossModel.chat_halves(t) for t in TASKS]
    ]
    alone = [[p] for p in prompts]
    start, got = run_vllm(ckpt, [*alone, prompts], tmp_path, max_tokens=MAX_TOKENS)
    print(start, file=sys.stderr)  # engine start time, for the README
    by_call = {(g["call"], g["index"]): g for g in got}
    batch_call = len(alone)
    frames = [win.features["mel"].shape[1] for win in windows]
    widest = max(min(f, CHUNK_FRAMES) for f in frames)
    touched = [padded_in_batch(f, widest) for f in frames]
    assert touched == [True, False, False]
    distinct, gaps = set(), {}
    for w, win in enumerate(windows):
        for t, task in enumerate(TASKS):
            k = w * len(TASKS) + t
            ids, lps, stopped = ours[w][t]
            # same audio token count, time markers included
            n_prompt = len(model.prompt_ids(task, audio_token_count(win.features["mel"].shape[1])))
            solo, batched = by_call[(k, 0)], by_call[(batch_call, k)]
            for theirs in (solo, batched):
                where = f"window {w} ({win.duration_s} s), {task.name}, call {theirs['call']}"
                assert theirs["prompt_tokens"] == n_prompt, where
                if theirs is batched and touched[w]:
                    continue  # not the computation earmark (or vLLM alone) does: measured below
                assert theirs["ids"][: len(ids)] == ids, where
                assert theirs["finish"] == ("stop" if stopped else "length"), where
                np.testing.assert_allclose(
                    theirs["logprobs"][: len(ids)], lps[: len(ids)], atol=LOGPROB_ATOL
                )
            steps = min(len(solo["logprobs"]), len(batched["logprobs"]))
            gap = np.abs(np.subtract(solo["logprobs"][:steps], batched["logprobs"][:steps]))
            gaps[(win.duration_s, task.name)] = f"{gap.max():.1e}"
            distinct.add(tuple(ids))
    print("vLLM alone vs batched:", gaps, file=sys.stderr)
    assert len(distinct) > len(windows)  # the audio and the task change the tokens
