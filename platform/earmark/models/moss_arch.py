"""earmark's own implementation of the MOSS-Audio architecture (4B/8B Instruct releases).

Written from the description of `OpenMOSS/MOSS-Audio` (`src/modeling_moss_audio.py`): the official
class lives only in the vendor's GitHub source and runs one sample at a time; this one loads the
released safetensors by their own parameter names (`audio_encoder.*`,
`deepstack_audio_merger_list.N.*`, `audio_adapter.*`, `language_model.*`, `lm_head.*`) and batches
left-padded prompts.

Pieces: a conv-stem + Whisper-style encoder over 128-bin log-mel (12.5 tokens/s; in
moss_encoder), a gated-MLP adapter into the Qwen3 backbone, and DeepStack: hidden states of chosen
encoder layers, each through its own gated MLP, added at the audio positions to the outputs of the
first decoder layers during prefill only. This module imports torch/transformers at the top; only
the backend imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

from earmark.models.moss_config import (
    MossAudioConfig,
    MossAudioEncoderConfig,
    downsampled_length,
)
from earmark.models.moss_encoder import GatedMLP, MossAudioEncoder

__all__ = ["MossAudioConfig", "MossAudioEncoderConfig", "MossAudioModel", "downsampled_length"]


def pack_rows(x: torch.Tensor, lens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[B,N,D] per-window states -> [sum(lens[rows]), D]: row r contributes x[rows[r], :lens]."""
    sel = x.index_select(0, rows)
    real = torch.arange(x.shape[1], device=x.device)[None, :] < lens.index_select(0, rows)[:, None]
    return sel[real]


def scatter_add_at(hidden: torch.Tensor, mask: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """hidden + packed at the True positions of mask (row-major = packing order); out of place."""
    if hidden.shape[:2] != mask.shape:
        raise ValueError(f"audio mask {tuple(mask.shape)} does not match {tuple(hidden.shape)}")
    out = hidden.clone()
    out[mask] = out[mask] + packed.to(out.dtype)
    return out


class MossAudioModel(PreTrainedModel):
    """Encoder + DeepStack mergers + adapter + Qwen3 backbone + untied head."""

    config_class = MossAudioConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    _no_split_modules = ["Qwen3DecoderLayer", "EncoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _tied_weights_keys: list[str] = []

    def __init__(self, config: MossAudioConfig) -> None:
        super().__init__(config)
        acfg, lcfg = config.audio_config, config.language_config
        self.audio_encoder = MossAudioEncoder(acfg)
        self.language_model = Qwen3Model(lcfg)
        self.audio_adapter = GatedMLP(acfg.output_dim, config.adapter_hidden_size, lcfg.hidden_size)
        self.deepstack_audio_merger_list = nn.ModuleList(
            GatedMLP(acfg.d_model, config.adapter_hidden_size, lcfg.hidden_size)
            for _ in range(config.num_deepstack)
        )
        self.lm_head = nn.Linear(lcfg.hidden_size, lcfg.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def encode_audio(
        self, mel: torch.Tensor, mel_lens: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """One encoder pass: adapter output [B,N,H], DeepStack embeds [B,N,H] each, token counts."""
        final, deep, lens = self.audio_encoder(mel, mel_lens)
        merged = [m(h) for m, h in zip(self.deepstack_audio_merger_list, deep, strict=False)]
        return self.audio_adapter(final), merged, lens

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | dict[str, torch.Tensor] | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        audio_embeds: torch.Tensor | None = None,
        deepstack_embeds: Sequence[torch.Tensor] | None = None,
        audio_input_mask: torch.Tensor | None = None,
        use_cache: bool = False,
        cache_position: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> CausalLMOutputWithPast:
        """Prefill when packed `audio_embeds` are given (put at `audio_input_mask`), else decode.

        `audio_embeds` and each of `deepstack_embeds` are packed [sum of per-row counts, H] in row
        order (see `pack_rows`); the DeepStack hooks exist only for this call.
        """
        embeds = self.get_input_embeddings()(input_ids)
        handles = []
        if audio_embeds is not None:
            if audio_input_mask is None:
                raise ValueError("audio_input_mask is required with audio_embeds")
            count = int(audio_input_mask.sum())
            if count != audio_embeds.shape[0]:
                raise ValueError(f"{count} audio positions but {audio_embeds.shape[0]} embeddings")
            embeds = embeds.clone()
            embeds[audio_input_mask] = audio_embeds.to(embeds.dtype)
            for k, packed in enumerate(deepstack_embeds or ()):
                handles.append(self._inject_hook(k, audio_input_mask, packed))
        try:
            out = self.language_model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                cache_position=cache_position,
            )
        finally:
            for h in handles:
                h.remove()
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(
            logits=self.lm_head(hidden), past_key_values=out.past_key_values
        )

    def _inject_hook(self, k: int, mask: torch.Tensor, packed: torch.Tensor) -> Any:
        """Add DeepStack embeds k at the audio positions of decoder layer k's output."""
        if packed.shape[0] != int(mask.sum()):
            raise ValueError(f"DeepStack layer {k}: {packed.shape[0]} embeds for {int(mask.sum())}")

        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (scatter_add_at(output[0], mask, packed), *output[1:])
            return scatter_add_at(output, mask, packed)

        return self.language_model.layers[k].register_forward_hook(hook)

    def decode_step_mask(self, mask: torch.Tensor) -> Any:
        """Attention mask for a one-token decode step.

        With SDPA and no sliding layers, a single new query may see every real key, so the 4D mask
        is the padding mask itself: built here directly, it skips transformers' general mask
        builder, which costs ~5 ms of Python per step (measured on CPU). Else the 2D mask as is.
        """
        lm = self.language_model
        if lm.config._attn_implementation != "sdpa" or lm.has_sliding_layers:
            return mask
        return {"full_attention": mask.bool()[:, None, None, :]}

    @torch.inference_mode()
    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        audio_embeds: torch.Tensor,
        deepstack_embeds: Sequence[torch.Tensor],
        audio_input_mask: torch.Tensor,
        max_new_tokens: int,
        stop_ids: Sequence[int],
        pad_id: int,
        tail_ids: torch.Tensor | None = None,
        tail_mask: torch.Tensor | None = None,
        logprobs: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Greedy decoding of left-padded rows; [R, steps] new ids (pad_id after a row stops).
        With `logprobs`, appends per step the [R] log-probabilities of the picked ids.

        With `tail_ids` [R * T, S] (left-padded, row-major: row r's T tails are r*T .. r*T+T-1),
        the R input rows are an audio prefix prefilled ONCE (DeepStack included); the cache is
        repeated T times and every tail continues its row, so T tasks share one audio prefill.
        """
        # Left padding: positions count real tokens only, so a row's numbers match its B=1 run.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            audio_embeds=audio_embeds,
            deepstack_embeds=deepstack_embeds,
            audio_input_mask=audio_input_mask,
            use_cache=True,
            logits_to_keep=1,
        )
        mask = attention_mask
        if tail_ids is not None and tail_mask is not None:
            repeats = tail_ids.shape[0] // input_ids.shape[0]
            out.past_key_values.batch_repeat_interleave(repeats)
            mask = torch.cat([attention_mask.repeat_interleave(repeats, 0), tail_mask], dim=1)
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
            width = attention_mask.shape[1]
            out = self(
                tail_ids,
                attention_mask=mask,
                position_ids=position_ids[:, width:],
                past_key_values=out.past_key_values,
                use_cache=True,
                cache_position=torch.arange(width, mask.shape[1], device=mask.device),
                logits_to_keep=1,
            )
        rows = mask.shape[0]
        stops = torch.tensor(sorted(set(stop_ids)), device=input_ids.device)
        done = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
        next_pos = position_ids[:, -1:] + 1
        new: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            step_logits = out.logits[:, -1]
            tok = step_logits.argmax(-1)
            if logprobs is not None:
                lp = step_logits.float()
                logprobs.append((lp.max(-1).values - torch.logsumexp(lp, -1)).cpu())
            tok = torch.where(done, torch.full_like(tok, pad_id), tok)
            new.append(tok)
            done = done | torch.isin(tok, stops)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self(
                tok[:, None],
                attention_mask=self.decode_step_mask(mask),
                position_ids=next_pos,
                past_key_values=out.past_key_values,
                use_cache=True,
                cache_position=torch.tensor([mask.shape[1] - 1], device=mask.device),
            )
            next_pos = next_pos + 1
        return torch.stack(new, dim=1) if new else input_ids.new_zeros((rows, 0))
