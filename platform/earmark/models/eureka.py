"""Eureka-Audio-Instruct backend (`cslys1999/Eureka-Audio-Instruct`).

Reference code: `Alittleegg/Eureka-Audio` (`eureka_infer/api/eureka.py`).

Preprocessing reproduces the reference (earmark.audio.features). Two ways to run the model:

- batched (default): the encoder (`audio_encoder.speech_encoder`) and MoE adapter
  (`audio_moe_adaptor`) run ONCE over all 30 s chunks of all windows; the prompt up to the audio
  is embedded with the backbone's token embeddings, `<|audio_pad|>` positions are overwritten
  with the window's first `frames` adapter outputs and prefilled once; every task continues that
  KV cache, and `backbone.generate` decodes all (window, task) rows together
  (`remote_code.annotate_tasks`).
- reference (`batched=False`, or automatically when the checkpoint lacks those submodules): the
  remote `model.generate(input_ids, token_type_ids, mel_batch_list=...)`, one window and one
  task at a time, exactly as the official CLI.

Both decode greedily with repetition_penalty 1.05 and stop on `<|im_end|>`/`<|endoftext|>`.
The prompt ids are handed to `generate` in both paths, so the repetition penalty sees the same
tokens. Left padding uses the `<|audio_pad|>` id, which every prompt already holds, so padding
never changes the penalized set (batch results equal one-at-a-time results).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from earmark.audio import features as F
from earmark.audio.windows import Window
from earmark.contracts import FAMILIES, TaskRequest
from earmark.models import hf_common as H
from earmark.models import hf_generate as G
from earmark.models.base import BatchStats, ModelInputError
from earmark.models.prompts import Prompt, prompt_for
from earmark.models.remote_code import RemoteCodeModel, annotate_tasks

log = logging.getLogger(__name__)

AUDIO_START, AUDIO_PAD, AUDIO_END = "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>"
IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
EMPTY_THINK = "<think>\n\n</think>\n\n"  # without it the model may emit EOS first (reference code)
AUDIO_TOKEN_TYPE = 3  # token_type_ids of <|audio_pad|> positions; text is 0
REPETITION_PENALTY = 1.05  # always applied by the reference
FRAMES_PER_TOKEN = 4  # 20 ms encoder frames concatenated into one 80 ms adapter input
MEL_FILTER_TOLERANCE = 1e-5  # max |Δ| between shipped and synthesized mel filters


class EurekaModel(RemoteCodeModel):
    info = FAMILIES["eureka"]
    fast_path = "batched"
    fast_submodules = "audio_encoder.speech_encoder, audio_moe_adaptor or backbone"

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        batched: bool = True,
        **load: Any,
    ) -> None:
        self.prefill_stats = BatchStats()  # prompt tokens: real vs padded, per generate call
        super().__init__(checkpoint, fast=batched, **load)

    # -- loading helpers --------------------------------------------------------------------
    def _check_checkpoint(self, local: bool) -> None:
        tok = self.tokenizer
        self.audio_pad_id = H.token_id(tok, AUDIO_PAD, self.checkpoint)
        for t in (AUDIO_START, AUDIO_END, IM_START):
            H.token_id(tok, t, self.checkpoint)
        self._check_mel_filters(local)

    def _check_mel_filters(self, local: bool) -> None:
        """Features are computed without the checkpoint; make sure its filters agree."""
        path = H.optional_file(self.checkpoint, "mel_filters.npz", self.revision, local)
        if path is None:
            log.info("%s ships no mel_filters.npz; using synthesized Slaney filters", self.name)
            return
        try:
            shipped = F.load_mel_filters(path)
        except (KeyError, ValueError, OSError) as e:
            warnings.warn(f"{self.name}: unusable mel_filters.npz ({e})", stacklevel=3)
            return
        diff = float(np.abs(shipped - F.default_mel_filters()).max())
        if diff > MEL_FILTER_TOLERANCE:
            warnings.warn(
                f"{self.name}: mel_filters.npz differs from the Slaney filters earmark uses by "
                f"{diff:.2e}; features will not match the reference exactly",
                stacklevel=3,
            )

    def _has_submodules(self) -> bool:
        m = self.model
        try:
            ok = m.audio_encoder.speech_encoder is not None and m.audio_moe_adaptor is not None
            return ok and callable(m.backbone.generate) and self._embedder() is not None
        except AttributeError:
            return False

    def _embedder(self) -> Any:
        backbone = self.model.backbone
        inner = getattr(backbone, "model", None)
        return getattr(inner, "embed_tokens", None) or backbone.get_input_embeddings()

    # -- CPU side ---------------------------------------------------------------------------
    @classmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        """{"mel": [128, 8 * ceil(n / 1280)] float32}: the reference log-mel of one window."""
        samples = cls.window_samples(samples)
        return {"mel": F.eureka_mel(samples)}

    # -- prompts ----------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The chat-template text of a prompt, with one `<|audio_pad|>` placeholder."""
        messages: list[dict[str, Any]] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        user: list[dict[str, str]] = [{"type": "audio", "audio": "<audio>"}]
        if prompt.user:
            user.append({"type": "text", "text": prompt.user})
        messages.append({"role": "user", "content": user})
        text = self.apply_template(messages, AUDIO_PAD, enable_thinking=False)
        if text is None:
            text = f"{IM_START}system\n{prompt.system}{IM_END}\n" if prompt.system else ""
            text += f"{IM_START}user\n{AUDIO_START}{AUDIO_PAD}{AUDIO_END}{prompt.user or ''}"
            text += f"{IM_END}\n{IM_START}assistant\n"
        if text.endswith(f"{IM_START}assistant\n"):
            text += EMPTY_THINK
        return text

    def _prompt_ids(self, task: TaskRequest) -> tuple[list[int], list[int]]:
        if task not in self._prompts:
            text = self.render(prompt_for(self.info.name, task))
            self._prompts[task] = G.split_prompt(self.tokenizer, text, AUDIO_PAD, self.audio_pad_id)
        return self._prompts[task]

    def prompt_ids(self, task: TaskRequest, frames: int) -> tuple[list[int], list[int]]:
        """input_ids and token_type_ids of one window: `<|audio_pad|>` × frames, type 3."""
        before, after = self._prompt_ids(task)
        ids = before + [self.audio_pad_id] * frames + after
        types = [0] * len(before) + [AUDIO_TOKEN_TYPE] * frames + [0] * len(after)
        return ids, types

    # -- model side -------------------------------------------------------------------------
    def _input(self, w: Window) -> np.ndarray:
        self.check_window(w)
        mel = w.features.get("mel")
        if mel is None:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id} has no 'mel' features (run EurekaModel.prepare)"
            )
        if mel.ndim != 2 or mel.shape[0] != F.N_MELS or mel.shape[1] % F.MEL_PER_TOKEN:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id}: mel has shape {mel.shape}, expected "
                f"[{F.N_MELS}, a multiple of {F.MEL_PER_TOKEN}]"
            )
        if mel.shape[1] > self.info.window_s * F.SAMPLE_RATE / F.HOP_LENGTH:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id}: {mel.shape[1]} mel frames is longer than "
                f"{self.info.window_s:.0f} s"
            )
        return mel

    def encode(self, mels: list[np.ndarray]) -> list[Any]:
        """Adapter outputs per window ([frames_i, hidden]): one encoder pass for the batch."""
        import torch

        chunks = [F.chunk_mel(m) for m in mels]
        x = torch.from_numpy(np.concatenate(chunks)).to(self.device, self.model.dtype)
        enc = self.model.audio_encoder.speech_encoder(x).last_hidden_state  # [N, 1500, D]
        n, t, d = enc.shape
        out = self.model.audio_moe_adaptor(
            enc.reshape(n, t // FRAMES_PER_TOKEN, d * FRAMES_PER_TOKEN)
        )
        self.stats.windows += len(mels)
        self.stats.encoder_passes += len(mels)
        self.stats.real_units += sum(m.shape[1] for m in mels)
        self.stats.padded_units += n * F.CHUNK_FRAMES
        result, start = [], 0
        for m, c in zip(mels, chunks, strict=True):
            frames = m.shape[1] // F.MEL_PER_TOKEN
            result.append(out[start : start + len(c)].reshape(-1, out.shape[-1])[:frames])
            start += len(c)
        return result

    def _generate_args(self, with_scores: bool) -> dict[str, Any]:
        args = G.greedy_kwargs(self.max_new_tokens, self.eos_ids, self.eos_ids[-1])
        return {**args, "repetition_penalty": REPETITION_PENALTY, **G.trace_kwargs(with_scores)}

    def _run_fast(self, mels: list[np.ndarray], tasks: list[TaskRequest], with_scores: bool):
        import torch

        with torch.inference_mode():
            return annotate_tasks(
                self.model.backbone,
                self.encode(mels),
                self.audio_pad_id,
                [self._prompt_ids(t) for t in tasks],
                self.audio_pad_id,
                self._generate_args(with_scores),
                self.eos_ids,
                with_scores,
                self.prefill_stats,
            )

    def _run_reference(self, mels: list[np.ndarray], tasks: list[TaskRequest], with_scores: bool):
        import torch

        results: list[dict[str, G.Trace]] = [{} for _ in mels]
        with torch.inference_mode():
            for i, mel in enumerate(mels):
                chunks = torch.from_numpy(F.chunk_mel(mel)).to(self.device, self.model.dtype)
                frames = mel.shape[1] // F.MEL_PER_TOKEN
                self.stats.windows += 1
                self.stats.real_units += mel.shape[1]
                self.stats.padded_units += chunks.shape[0] * F.CHUNK_FRAMES
                for task in tasks:
                    ids, types = self.prompt_ids(task, frames)
                    ids_t = torch.tensor([ids], device=self.device)
                    self.stats.encoder_passes += 1  # the remote generate re-encodes every call
                    rec = G.LogProbRecorder()
                    out = self.model.generate(
                        input_ids=ids_t,
                        token_type_ids=torch.tensor([types], device=self.device),
                        audio_input_ids=None,
                        mel_batch_list=chunks,
                        **self._generate_args(with_scores),
                        **G.recorder_kwargs(rec),
                    )
                    row = G.generated_rows(out, ids_t, self.eos_ids, with_scores, rec)[0]
                    results[i][task.name] = row
        return results
