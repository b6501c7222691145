"""Greedy generation plumbing of the transformers backends: left padding, the generate kwargs,
prompt halves around the audio placeholder, stripping the prompt, decoding through the first
stop id, and generation traces (ids and scores) for parity checks. torch is imported inside
functions so that importing this module stays light."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from earmark.models.result import TaskText, mean_logprob


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[Any, Any]:
    """Left-padded ids [B, L] and attention mask (0 on padding)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def decode(tokenizer: Any, ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """Text of generated ids: cut at the first stop id, drop ids beyond the tokenizer's vocab."""
    out: list[int] = []
    limit = len(tokenizer)
    for t in ids:
        t = int(t)
        if t in stop_ids:
            break
        if t < limit:  # the LM head is wider than the vocabulary; those ids decode to nothing
            out.append(t)
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def greedy_kwargs(max_new_tokens: int, eos_ids: list[int], pad_id: int) -> dict[str, Any]:
    """Deterministic decoding that ignores sampling settings from generation_config.json."""
    return dict(
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )


def split_prompt(tokenizer: Any, text: str, audio_token: str, audio_id: int) -> tuple[list, list]:
    """Token ids before and after the single audio placeholder of a rendered prompt."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids.count(audio_id) != 1:
        raise ValueError(f"rendered prompt holds {ids.count(audio_id)} {audio_token} tokens")
    at = ids.index(audio_id)
    return ids[:at], ids[at + 1 :]


def strip_prompt(sequences: Any, prompt_ids: Any) -> Any:
    """New tokens of a generate output, whether or not it starts with the prompt."""
    import torch

    seq = getattr(sequences, "sequences", sequences)
    n = prompt_ids.shape[-1]
    if seq.shape[-1] >= n and torch.equal(seq[..., :n].to(prompt_ids.device), prompt_ids):
        return seq[..., n:]
    return seq


# ---------------------------------------------------------------------------------------------
# Greedy traces: generated ids with the scores (logits after repetition penalty) of each step,
# to check that two ways of running a model (batched vs one at a time) agree, allowing a flipped
# near-tie.
# ---------------------------------------------------------------------------------------------


@dataclass
class Trace:
    """One generated row: new ids through the first stop id, (when traced) the logits of each
    step [steps, vocab], and the log-probability of each kept id (LogProbRecorder)."""

    ids: list[int]
    scores: Any = None
    logprobs: list[float] | None = None
    stopped_on: int | None = None  # the stop id it ended on; None: it hit the token limit

    @property
    def stopped(self) -> bool:
        return self.stopped_on is not None


class LogProbRecorder:
    """A logits processor, last in line, that records per step and row the log-probability of
    the token greedy decoding picks: max(scores) - logsumexp(scores). Cheap ([rows] floats a
    step) where output_scores keeps [rows, vocab] a step. Returns the scores unchanged."""

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        s = scores.float()
        self.steps.append((s.max(-1).values - torch.logsumexp(s, -1)).cpu())
        return scores

    def rows(self) -> list[list[float]]:
        import torch

        return torch.stack(self.steps, 1).tolist() if self.steps else []


def recorder_kwargs(recorder: LogProbRecorder) -> dict[str, Any]:
    """generate kwargs that put the recorder after the model's own logits processors."""
    from transformers import LogitsProcessorList

    return {"logits_processor": LogitsProcessorList([recorder])}


def generated_rows(
    out: Any,
    prompt_ids: Any,
    stop_ids: Sequence[int],
    trace: bool,
    recorder: LogProbRecorder | None = None,
) -> list[Trace]:
    """Per row: new ids cut after the first stop id, (when traced) their step logits, and (with
    a recorder) their log-probabilities."""
    import torch

    new = strip_prompt(out, prompt_ids).tolist()
    logits = None
    if trace:
        logits = torch.stack(list(out.scores), dim=1).float().cpu().numpy()  # [B, steps, V]
    lps = recorder.rows() if recorder is not None else []
    rows: list[Trace] = []
    for i, ids in enumerate(new):
        cut = next((k + 1 for k, t in enumerate(ids) if t in stop_ids), None)
        end = len(ids) if cut is None else cut
        row_lp = lps[i][:end] if i < len(lps) and len(lps[i]) >= end else None
        rows.append(
            Trace(
                ids[:end],
                None if logits is None else logits[i, :end],
                row_lp,
                None if cut is None else ids[cut - 1],
            )
        )
    return rows


def task_text(tokenizer: Any, row: Trace, stop_ids: Sequence[int]) -> TaskText:
    """A generated row as a TaskText: decoded text, mean log-probability, truncation."""
    return TaskText(
        text=decode(tokenizer, row.ids, stop_ids),
        avg_logprob=mean_logprob(row.logprobs or []),
        truncated=not row.stopped,
    )


def trace_kwargs(trace: bool) -> dict[str, Any]:
    return dict(return_dict_in_generate=True, output_scores=True) if trace else {}


def compare_traces(a: Trace, b: Trace, atol: float = 1e-3, tie: float = 1e-3) -> str | None:
    """None when two greedy runs agree: same ids and close logits, or logits that stay close
    up to a step where `a` had a near-tie (top-2 gap < tie) and the runs picked differently."""
    import numpy as np

    (ids_a, log_a), (ids_b, log_b) = (a.ids, a.scores), (b.ids, b.scores)
    steps = min(len(ids_a), len(ids_b))
    for k in range(steps):
        diff = float(np.abs(log_a[k] - log_b[k]).max())
        if diff > atol:
            return f"step {k}: logits differ by {diff:.2e} (> {atol})"
        if ids_a[k] != ids_b[k]:
            top2 = np.sort(log_a[k])[-2:]
            gap = float(top2[1] - top2[0])
            if gap < tie:
                return None
            return f"step {k}: token {ids_a[k]} vs {ids_b[k]} with a top-2 gap of {gap:.2e}"
    if len(ids_a) != len(ids_b):
        return f"lengths differ: {len(ids_a)} vs {len(ids_b)} tokens"
    return None
