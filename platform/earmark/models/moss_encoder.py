"""The MOSS-Audio audio encoder and the gated MLP of its adapter and DeepStack mergers.

A conv stem (three stride-2 convs over 128-bin log-mel, 12.5 tokens/s) and a Whisper-style
pre-norm encoder with sinusoidal positions; it also returns the hidden states of the encoder
layers DeepStack takes. Parameter names follow the released checkpoint (`audio_encoder.*`).
This module imports torch at the top; only the MOSS backend imports it (through moss_arch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from earmark.models.moss_config import (
    CONV_STRIDE,
    POS_MAX_TIMESCALE,
    MossAudioEncoderConfig,
    downsampled_length,
)


class GatedMLP(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases: the adapter and each DeepStack merger."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_in, d_hidden, bias=False)
        self.up_proj = nn.Linear(d_in, d_hidden, bias=False)
        self.down_proj = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class EncoderAttention(nn.Module):
    """Whisper-layout self-attention (key projection without bias), run through SDPA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        # keep: [B,1,1,T] bool, True = real key. Scale = head_dim**-0.5 (SDPA default = Whisper's).
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm Whisper encoder layer: x + attn(ln(x)); x + fc2(gelu(fc1(ln(x))))."""

    def __init__(self, cfg: MossAudioEncoderConfig) -> None:
        super().__init__()
        self.self_attn = EncoderAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), keep)
        x = x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        if x.dtype == torch.float16:  # fp16 overflow guard, as Whisper does
            bound = torch.finfo(x.dtype).max - 1000
            x = x.clamp(-bound, bound)
        return x


class MossAudioEncoder(nn.Module):
    """[B,128,T] log-mel -> ([B,N,out] final states, [B,N,d] DeepStack states, [B] token counts)."""

    def __init__(self, cfg: MossAudioEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.downsample_hidden_size
        self.conv1 = nn.Conv2d(1, ch, kernel_size=3, stride=CONV_STRIDE, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, kernel_size=3, stride=CONV_STRIDE, padding=1)
        self.conv3 = nn.Conv2d(ch, ch, kernel_size=3, stride=CONV_STRIDE, padding=1)
        freq = downsampled_length(cfg.num_mel_bins)  # 128 bins -> 16
        self.stem_proj = nn.Linear(ch * freq, cfg.d_model)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.out_proj = (
            nn.Identity()
            if cfg.output_dim == cfg.d_model
            else nn.Linear(cfg.d_model, cfg.output_dim, bias=False)
        )
        half = cfg.d_model // 2
        inv = torch.exp(-math.log(POS_MAX_TIMESCALE) / (half - 1) * torch.arange(half).float())
        self.register_buffer("inv_timescales", inv, persistent=False)  # not in the checkpoint

    def positions(self, n: int, device: torch.device) -> torch.Tensor:
        t = (
            torch.arange(n, device=device, dtype=torch.float32)[:, None]
            * self.inv_timescales.float()
        )
        return torch.cat([t.sin(), t.cos()], dim=1)

    def forward(
        self, mel: torch.Tensor, mel_lens: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        x = mel.unsqueeze(1)  # [B,1,F,T]
        lens = mel_lens.to(x.device)
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.gelu(conv(x))
            lens = (lens - 1) // CONV_STRIDE + 1
            # Zero every frame past a sample's own length so the next conv sees the zeros its
            # padding would give in a B=1 run: this keeps a batched clip equal to the clip alone.
            real = torch.arange(x.shape[-1], device=x.device)[None, :] < lens[:, None]
            x = x * real[:, None, None, :].to(x.dtype)
        x = x.permute(0, 3, 1, 2).flatten(2)  # [B,T,C*F], channel-major as the checkpoint expects
        x = self.stem_proj(x)
        x = x + self.positions(x.shape[1], x.device).to(x.dtype)
        keep = (torch.arange(x.shape[1], device=x.device)[None, :] < lens[:, None])[:, None, None]
        wanted = set(self.cfg.deepstack_encoder_layer_indexes)
        deep: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x = layer(x, keep)
            if i in wanted:
                deep.append(x)
        return self.out_proj(self.layer_norm(x)), deep, lens
