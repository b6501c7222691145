"""Stand-in for Eureka-Audio's remote modeling code (tests and benchmarks only).

The real `modeling_eureka_audio.py` is not public. This file reproduces the interface and module
names that third-party ports report (see earmark.models.remote_code) so the production loader, the
batched submodule path and the reference `generate` path can be exercised offline:

- `audio_encoder.speech_encoder`: transformers `WhisperEncoder` (fixed [n, 128, 3000] chunks)
- `audio_moe_adaptor`: 4 consecutive encoder frames concatenated -> sparse top-k MoE of SiLU
  FFNs -> projection -> RMSNorm (expert count / widths are placeholders)
- `backbone`: `Qwen3ForCausalLM`
- `generate(input_ids, token_type_ids, audio_input_ids, mel_batch_list, ...)`: batch size 1, as
  in the reference; `<|audio_pad|>` positions (token type 3) receive the adaptor outputs.
"""

import torch
from torch import nn
from transformers import PreTrainedModel, Qwen3ForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .configuration_eureka_audio import EurekaAudioConfig

AUDIO_TOKEN_TYPE = 3  # token_type_ids value of <|audio_pad|> positions


class AudioEncoder(nn.Module):
    def __init__(self, config: EurekaAudioConfig):
        super().__init__()
        self.speech_encoder = WhisperEncoder(config.audio_config)


class AudioNanoExpert(nn.Module):
    """Sparse MoE adapter: router -> top-k softmax -> weighted SiLU experts -> proj -> RMSNorm."""

    def __init__(self, config: EurekaAudioConfig):
        super().__init__()
        d_in = config.audio_config.d_model * config.adaptor_downsample
        hidden = config.text_config.hidden_size
        self.top_k = config.adaptor_top_k
        self.router = nn.Linear(d_in, config.adaptor_num_experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d_in, config.adaptor_ffn_dim),
                nn.SiLU(),
                nn.Linear(config.adaptor_ffn_dim, config.adaptor_ffn_dim),
            )
            for _ in range(config.adaptor_num_experts)
        )
        self.proj = nn.Linear(config.adaptor_ffn_dim, hidden)
        self.norm = nn.RMSNorm(hidden, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x)
        top_val, top_idx = logits.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, top_idx, top_val.softmax(dim=-1))
        out = sum(gates[..., i : i + 1] * expert(x) for i, expert in enumerate(self.experts))
        return self.norm(self.proj(out))


class EurekaAudioPreTrainedModel(PreTrainedModel):
    config_class = EurekaAudioConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _no_split_modules = ["WhisperEncoderLayer", "Qwen3DecoderLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.RMSNorm):
            module.weight.data.fill_(1.0)


class EurekaAudioForCausalLM(EurekaAudioPreTrainedModel):
    def __init__(self, config: EurekaAudioConfig):
        super().__init__(config)
        self.audio_encoder = AudioEncoder(config)
        self.audio_moe_adaptor = AudioNanoExpert(config)
        self.backbone = Qwen3ForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """[n_chunks, 128, 3000] -> [n_chunks * 375, hidden] adaptor outputs, in time order."""
        enc = self.audio_encoder.speech_encoder(mel.to(self.dtype)).last_hidden_state
        k = self.config.adaptor_downsample
        n, t, d = enc.shape
        out = self.audio_moe_adaptor(enc.reshape(n, t // k, d * k))
        return out.reshape(-1, out.shape[-1])

    def _embed(self, input_ids, token_type_ids, mel_batch_list):
        embeds = self.get_input_embeddings()(input_ids)
        if mel_batch_list is None:
            return embeds
        if input_ids.shape[0] != 1:
            raise ValueError("the Eureka-Audio reference path takes one conversation at a time")
        if isinstance(mel_batch_list, (list, tuple)):
            mel_batch_list = torch.cat(list(mel_batch_list), dim=0)
        audio = self.encode_audio(mel_batch_list)
        mask = token_type_ids == AUDIO_TOKEN_TYPE
        n = int(mask.sum())
        if n > audio.shape[0]:
            raise ValueError(f"{n} audio positions but only {audio.shape[0]} audio frames")
        embeds = embeds.clone()
        embeds[mask] = audio[:n].to(embeds.dtype)
        return embeds

    def forward(
        self,
        input_ids=None,
        token_type_ids=None,
        mel_batch_list=None,
        attention_mask=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        embeds = self._embed(input_ids, token_type_ids, mel_batch_list)
        return self.backbone(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        input_ids=None,
        token_type_ids=None,
        audio_input_ids=None,
        mel_batch_list=None,
        attention_mask=None,
        **kwargs,
    ):
        embeds = self._embed(input_ids, token_type_ids, mel_batch_list)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # ids go along so that the returned sequences start with the prompt
        return self.backbone.generate(
            input_ids=input_ids, inputs_embeds=embeds, attention_mask=attention_mask, **kwargs
        )
