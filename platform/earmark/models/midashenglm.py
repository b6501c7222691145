"""MiDashengLM-7B backend (`mispeech/midashenglm-7b-1021-bf16`).

Reference code: `xiaomi-research/dasheng-lm`.

Inputs follow the reference processor: the raw 16 kHz waveform, right-padded with zeros into
`input_values` [B, samples] with the real lengths in `audio_length`; prompt ids left-padded with
`<|AUDIO|>` repeated `int(1 + n/160) // 4 // 5` times between `<|audio_bos|>`/`<|audio_eos|>`.

Encode once, ask many (default): `audio_encoder(input_values, audio_length)` and
`audio_projector(frames, mask)` run once per batch; the prompt up to and just past the audio is
embedded with the decoder's token embeddings, its `<|AUDIO|>` positions receive the window's audio
tokens, and it is prefilled once; every task continues that KV cache and `decoder.generate`
decodes all (window, task) rows together (`remote_code.annotate_tasks`). With `encode_once=False`
(or when the checkpoint lacks those submodules) the remote
`model.generate(input_ids, attention_mask, input_values, audio_length)` runs once per task,
re-encoding the audio each time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from earmark.audio import features as F
from earmark.audio.windows import Window
from earmark.contracts import FAMILIES, TaskRequest
from earmark.models import hf_common as H
from earmark.models import hf_generate as G
from earmark.models.base import ModelInputError
from earmark.models.prompts import Prompt, prompt_for
from earmark.models.remote_code import RemoteCodeModel, annotate_tasks

log = logging.getLogger(__name__)

AUDIO_BOS, AUDIO_TOKEN, AUDIO_EOS = "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"
IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
# System prompt of the published serving example (vLLM); the reference template's default is
# not public, so it is always given explicitly.
SYSTEM_PROMPT = "You are a helpful language and speech assistant."


def render_prompt(prompt: Prompt, template: Callable[[list[dict[str, Any]]], str | None]) -> str:
    """Chat text of a prompt with one `<|audio_bos|><|AUDIO|><|audio_eos|>` placeholder: the
    checkpoint's chat template (`template(messages)`), else the documented format (both engines
    use this, so they see the same text)."""
    system = prompt.system or SYSTEM_PROMPT
    user: list[dict[str, str]] = [{"type": "audio", "audio": "<audio>"}]
    if prompt.user:
        user.append({"type": "text", "text": prompt.user})
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    text = template(messages)
    if text is None:
        text = (
            f"{IM_START}system\n{system}{IM_END}\n{IM_START}user\n"
            f"{AUDIO_BOS}{AUDIO_TOKEN}{AUDIO_EOS}{prompt.user or ''}{IM_END}\n"
            f"{IM_START}assistant\n"
        )
    # the reference processor adds the audio bos/eos around <|AUDIO|> when missing
    if f"{AUDIO_BOS}{AUDIO_TOKEN}" not in text:
        text = text.replace(AUDIO_TOKEN, f"{AUDIO_BOS}{AUDIO_TOKEN}", 1)
    if f"{AUDIO_TOKEN}{AUDIO_EOS}" not in text:
        text = text.replace(AUDIO_TOKEN, f"{AUDIO_TOKEN}{AUDIO_EOS}", 1)
    return text


class MiDashengLMModel(RemoteCodeModel):
    info = FAMILIES["midashenglm"]
    fast_path = "encode-once"
    fast_submodules = "audio_encoder, audio_projector or decoder"
    fallback_errors = (AttributeError, TypeError, RuntimeError, ValueError)

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        encode_once: bool = True,
        **load: Any,
    ) -> None:
        super().__init__(checkpoint, fast=encode_once, **load)

    def _check_checkpoint(self, local: bool) -> None:
        tok = self.tokenizer
        self.audio_id = H.token_id(tok, AUDIO_TOKEN, self.checkpoint)
        H.token_id(tok, AUDIO_BOS, self.checkpoint)
        H.token_id(tok, AUDIO_EOS, self.checkpoint)
        # the reference pads with the tokenizer's pad token, else its EOS
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else self.eos_ids[-1])

    def _has_submodules(self) -> bool:
        m = self.model
        try:
            return (
                m.audio_encoder is not None
                and m.audio_projector is not None
                and callable(m.decoder.generate)
                and m.decoder.get_input_embeddings() is not None
            )
        except AttributeError:
            return False

    # -- CPU side ---------------------------------------------------------------------------
    @classmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        """{"input_values": waveform float32}, zero-padded to ≥ 3200 samples (one token)."""
        samples = cls.window_samples(samples)
        return {"input_values": F.pad_to_min_length(samples)}

    # -- prompts ----------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """Chat text with one `<|audio_bos|><|AUDIO|><|audio_eos|>` placeholder."""
        return render_prompt(prompt, lambda m: self.apply_template(m, AUDIO_TOKEN))

    def prompt_ids(self, task: TaskRequest, num_samples: int) -> list[int]:
        """input_ids of one window: `<|AUDIO|>` × dasheng_num_tokens(num_samples)."""
        before, after = self._halves(task)
        return before + [self.audio_id] * F.dasheng_num_tokens(num_samples) + after

    def _halves(self, task: TaskRequest) -> tuple[list[int], list[int]]:
        """Prompt ids before and after the `<|AUDIO|>` placeholder."""
        if task not in self._prompts:
            text = self.render(prompt_for(self.info.name, task))
            self._prompts[task] = G.split_prompt(self.tokenizer, text, AUDIO_TOKEN, self.audio_id)
        return self._prompts[task]

    # -- model side -------------------------------------------------------------------------
    def _input(self, w: Window) -> np.ndarray:
        self.check_window(w)
        wave = w.features.get("input_values")
        if wave is None:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id} has no 'input_values' features "
                f"(run MiDashengLMModel.prepare)"
            )
        if wave.ndim != 1 or wave.size == 0:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id}: input_values has shape {wave.shape}"
            )
        if wave.size > max(self.info.window_s * F.SAMPLE_RATE, F.DASHENG_MIN_SAMPLES):
            raise ModelInputError(
                f"window {w.index} of {w.audio_id}: {wave.size} samples is longer than "
                f"{self.info.window_s:.0f} s"
            )
        return wave

    def _batch(self, waves: list[np.ndarray]) -> tuple[Any, Any]:
        """Right-padded input_values [B, max_len] (zeros) and audio_length [B]."""
        import torch

        lengths = [len(w) for w in waves]
        values = np.zeros((len(waves), max(lengths)), dtype=np.float32)
        for i, w in enumerate(waves):
            values[i, : len(w)] = w
        self.stats.windows += len(waves)
        self.stats.real_units += sum(lengths)
        self.stats.padded_units += values.size
        return (
            torch.from_numpy(values).to(self.device),
            torch.tensor(lengths, dtype=torch.long, device=self.device),
        )

    def encode(self, waves: list[np.ndarray]) -> list[Any]:
        """Audio-token embeddings per window ([tokens_i, hidden]), one encoder pass."""
        values, lengths = self._batch(waves)
        out = self.model.audio_encoder(values, lengths)
        frames, mask = out if isinstance(out, tuple) else (out, None)
        proj = self.model.audio_projector(frames, mask)
        tokens = proj[0] if isinstance(proj, tuple) else proj
        self.stats.encoder_passes += len(waves)
        result = []
        for i, w in enumerate(waves):
            n = F.dasheng_num_tokens(len(w))
            if tokens.shape[1] < n:
                raise RuntimeError(f"projector gave {tokens.shape[1]} tokens, {n} expected")
            result.append(tokens[i, :n])
        return result

    def _generate_args(self, with_scores: bool) -> dict[str, Any]:
        args = G.greedy_kwargs(self.max_new_tokens, self.eos_ids, self.pad_id)
        return {**args, **G.trace_kwargs(with_scores)}

    def _run_fast(self, waves: list[np.ndarray], tasks: list[TaskRequest], with_scores: bool):
        import torch

        with torch.inference_mode():
            return annotate_tasks(
                self.model.decoder,
                self.encode(waves),
                self.audio_id,
                [self._halves(t) for t in tasks],
                self.pad_id,
                self._generate_args(with_scores),
                self.eos_ids,
                with_scores,
            )

    def _run_reference(self, waves: list[np.ndarray], tasks: list[TaskRequest], with_scores: bool):
        import torch

        results: list[dict[str, G.Trace]] = [{} for _ in waves]
        with torch.inference_mode():
            values, lengths = self._batch(waves)
            for task in tasks:
                rows = [self.prompt_ids(task, len(w)) for w in waves]
                ids, mask = G.left_pad(rows, self.pad_id, self.device)
                self.stats.encoder_passes += len(waves)
                rec = G.LogProbRecorder()
                out = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    input_values=values,
                    audio_length=lengths,
                    **self._generate_args(with_scores),
                    **G.recorder_kwargs(rec),
                )
                rows = G.generated_rows(out, ids, self.eos_ids, with_scores, rec)
                for i, row in enumerate(rows):
                    results[i][task.name] = row
        return results
