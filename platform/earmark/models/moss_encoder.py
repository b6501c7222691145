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
        """Encode each clip in chunks of `2 * n_window` mel frames (4 s in the release), as
        the upstream encoder does since its "chunk infer" change and as vLLM does: each chunk
        runs the conv stem and the layers alone (positions from 0, attention inside the chunk)
        and the clip's tokens are its chunks' tokens in order. Without `n_window`, one pass
        over the whole clip."""
        n_window = getattr(self.cfg, "n_window", None)
        if not n_window:
            return self.encode_rows(mel, mel_lens, mel_lens)
        return self._encode_chunked(mel, mel_lens, 2 * int(n_window))

    def _encode_chunked(
        self, mel: torch.Tensor, mel_lens: torch.Tensor, chunk: int
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        rows, conv_lens, real_lens, owner = [], [], [], []
        for b, n in enumerate(int(x) for x in mel_lens.tolist()):
            k = max(1, -(-n // chunk))
            for c in range(k):
                a, e = c * chunk, min(n, (c + 1) * chunk)
                rows.append(mel[b, :, a:e])
                real_lens.append(e - a)
                # the reference pads a clip's chunks to its longest one (a full chunk when it
                # has several) and runs the convs over the padding: the tail chunk of a long
                # clip sees that padding; a clip of one chunk has none
                conv_lens.append(chunk if k > 1 else e - a)
                owner.append(b)
        width = max(conv_lens)
        x = mel.new_zeros((len(rows), mel.shape[1], width))
        for i, r in enumerate(rows):
            x[i, :, : r.shape[1]] = r
        dev = mel.device
        final, deep, tokens = self.encode_rows(
            x, torch.tensor(conv_lens, device=dev), torch.tensor(real_lens, device=dev)
        )
        counts = [0] * mel.shape[0]
        for i, b in enumerate(owner):
            counts[b] += int(tokens[i])
        n_max = max(counts)

        def assemble(h: torch.Tensor) -> torch.Tensor:
            out = h.new_zeros((mel.shape[0], n_max, h.shape[-1]))
            filled = [0] * mel.shape[0]
            for i, b in enumerate(owner):
                t = int(tokens[i])
                out[b, filled[b] : filled[b] + t] = h[i, :t]
                filled[b] += t
            return out

        lens = torch.tensor(counts, device=dev, dtype=mel_lens.dtype)
        return assemble(final), [assemble(d) for d in deep], lens

    def encode_rows(
        self, mel: torch.Tensor, conv_lens: torch.Tensor, real_lens: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """One pass over rows of log-mel: the convs see each row's first `conv_lens` frames
        (zeros after, as a run of that row alone), attention its real tokens only."""
        x = mel.unsqueeze(1)  # [B,1,F,T]
        lens = conv_lens.to(x.device)
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.gelu(conv(x))
            lens = (lens - 1) // CONV_STRIDE + 1
            # Zero every frame past a row's own length so the next conv sees the zeros its
            # padding would give in a B=1 run: this keeps a batched clip equal to the clip alone.
            real = torch.arange(x.shape[-1], device=x.device)[None, :] < lens[:, None]
            x = x * real[:, None, None, :].to(x.dtype)
        tokens = torch.tensor(
            [downsampled_length(int(n)) for n in real_lens.tolist()], device=x.device
        )
        x = x.permute(0, 3, 1, 2).flatten(2)  # [B,T,C*F], channel-major as the checkpoint expects
        x = self.stem_proj(x)
        x = x + self.positions(x.shape[1], x.device).to(x.dtype)
        keep = (torch.arange(x.shape[1], device=x.device)[None, :] < tokens[:, None])[:, None, None]
        wanted = set(self.cfg.deepstack_encoder_layer_indexes)
        deep: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x = layer(x, keep)
            if i in wanted:
                deep.append(x)
        return self.out_proj(self.layer_norm(x)), deep, tokens
