"""Stand-in for MiDashengLM's remote modeling code (tests and benchmarks only).

A plain-torch model with the module names, weight names and call signatures of the published
port (`xiaomi-research/dasheng-lm`, whose architecture vLLM's `midashenglm.py` follows):
`audio_encoder` (mel front end -> init_bn -> patch_embed -> positional embeddings -> pre-LN ViT
blocks over `target_length`-frame splits -> norm; `forward(input_values, audio_length) ->
(frames, mask)`), `audio_projector` (5 frames concatenated -> net.0, GELU, net.2; `forward(x,
mask) -> (tokens, mask)`) and `decoder` (`Qwen2ForCausalLM`). `generate(input_ids,
attention_mask, input_values, audio_length, ...)` returns only new tokens.

What it shares with the real encoder, so that vLLM's implementation loads these weights and
computes the same numbers: a power spectrogram (Hann window, n_fft 512, hop 160, centred with
reflect padding), HTK mel filters without normalization (torchaudio's `melscale_fbanks`
defaults), 10·log10(max(mel, 1e-10)) floored at 120 dB below the sample's loudest bin, an
eval-mode BatchNorm over the mel bins, patches of 64×4 frames, positional embeddings indexed
from each split's start, and a key mask of `audio_length // (4 * hop)` valid patches.

One difference: the mel is computed per sample on its real length, so one audio gives the same
features in any batch. The real front end runs on the zero-padded batch, where the frames within
256 samples of an audio's end see zeros instead of the reflected signal; in a batch with longer
audio that changes the output when a kept token reads such a frame (e.g. `audio_length % 640`
<= 95; see tests/unit/test_midashenglm_vllm_parity.py). The mel buffers are not saved
(`persistent=False`): vLLM builds its own.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, Qwen2ForCausalLM

from .configuration_midashenglm import DashengConfig, MiDashengLMConfig

PATCH_FRAMES = 4  # mel frames per encoder patch
TOP_DB = 120.0  # dB kept below the loudest bin
MIN_POWER = 1e-10


def _hz_to_mel_htk(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def htk_mel_filters(n_freqs: int, n_mels: int, sr: int, f_min: float, f_max: float):
    """Triangular HTK-scale filters without normalization, [n_freqs, n_mels], computed in
    float32 like torchaudio's `melscale_fbanks` (which the real front end uses)."""
    all_freqs = torch.linspace(0, sr // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def num_audio_tokens(num_samples: int, hop: int = 160, subsample: int = 5) -> int:
    return max(1, int(1 + num_samples / hop) // PATCH_FRAMES // subsample)


class MelFrontEnd(nn.Module):
    def __init__(self, cfg: DashengConfig):
        super().__init__()
        self.n_fft, self.hop, self.win = cfg.n_fft, cfg.hop_length, cfg.win_length
        self.center = cfg.center
        # not saved: computed from the config, as the real front end does
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)
        n_freqs = cfg.n_fft // 2 + 1
        fb = htk_mel_filters(n_freqs, cfg.n_mels, cfg.sample_rate, cfg.f_min, cfg.f_max)
        self.register_buffer("fb", fb, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """[samples] -> [n_mels, 1 + samples // hop] dB mel of one audio."""
        spec = torch.stft(
            wav.float(),
            self.n_fft,
            hop_length=self.hop,
            win_length=self.win,
            window=self.window.float(),
            center=self.center,
            pad_mode="reflect",
            return_complex=True,
        )
        mel = (spec.abs().pow(2).T @ self.fb.float()).T
        db = 10.0 * torch.log10(mel.clamp(min=MIN_POWER))
        return torch.maximum(db, db.max() - TOP_DB)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if key_mask is not None:
            # a row with no key to attend to gets a zero output, as torch's SDPA gives the real
            # encoder (and vLLM's) on current torch; stated here, so no torch version gives NaN
            out = out.masked_fill(~key_mask.any(-1)[:, None, None, None], 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, cfg: DashengConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        init = getattr(cfg, "init_values", None)  # per-channel output scales, when configured
        self.ls1 = LayerScale(dim, init) if init else nn.Identity()
        self.ls2 = LayerScale(dim, init) if init else nn.Identity()

    def forward(self, x, key_mask):
        x = x + self.ls1(self.attn(self.norm1(x), key_mask))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: DashengConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            1, cfg.embed_dim, kernel_size=tuple(cfg.patch_size), stride=tuple(cfg.patch_stride)
        )

    def forward(self, x):
        return self.proj(x)


class DashengAudioTransformer(nn.Module):
    def __init__(self, cfg: DashengConfig):
        super().__init__()
        self.cfg = cfg
        self.front_end = MelFrontEnd(cfg)
        self.init_bn = nn.BatchNorm2d(cfg.n_mels, momentum=0.01)
        self.patch_embed = PatchEmbed(cfg)
        grid_t = cfg.target_length // cfg.patch_stride[1]
        grid_f = cfg.n_mels // cfg.patch_stride[0]
        self.time_pos_embed = nn.Parameter(torch.randn(1, cfg.embed_dim, 1, grid_t) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, cfg.embed_dim, grid_f, 1) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, input_values: torch.Tensor, audio_length: torch.Tensor):
        b, n_samples = input_values.shape
        n_frames = 1 + n_samples // self.cfg.hop_length
        mels = input_values.new_zeros(b, self.cfg.n_mels, n_frames, dtype=torch.float32)
        for i in range(b):  # per sample: padding never changes a sample's features
            length = int(audio_length[i])
            mel = self.front_end(input_values[i, :length])
            mels[i, :, : mel.shape[1]] = mel
        x = mels.to(self.time_pos_embed.dtype).unsqueeze(1)  # [B, 1, F, T]
        x = self.init_bn(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        x = self.patch_embed(x)  # [B, D, 1, t]
        t = x.shape[-1]
        # the real encoder's key mask: audio_length // 640 valid patches (4 hops a patch); a
        # patch over the last partial frames is computed but nothing attends to it
        valid = torch.tensor(
            [int(n) // (self.cfg.hop_length * PATCH_FRAMES) for n in audio_length],
            device=x.device,
        )
        mask = torch.arange(t, device=x.device)[None, :] < valid[:, None]
        split = self.cfg.target_length // PATCH_FRAMES
        outs = []
        for start in range(0, t, split):
            part = x[..., start : start + split]
            part = part + self.time_pos_embed[..., : part.shape[-1]] + self.freq_pos_embed
            part = part.flatten(2).transpose(1, 2)  # [B, tc, D]
            keys = mask[:, start : start + split]
            for block in self.blocks:
                part = block(part, keys)
            outs.append(self.norm(part))
        return torch.cat(outs, dim=1), mask


class AudioProjectorSubsample(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, k: int):
        super().__init__()
        self.k = k
        self.net = nn.Sequential(
            nn.Linear(in_dim * k, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        b, t, d = x.shape
        keep = t - t % self.k
        x = x[:, :keep].reshape(b, keep // self.k, d * self.k)
        if mask is not None:
            mask = mask[:, :keep].reshape(b, -1, self.k).any(dim=-1)
        return self.net(x), mask


class MiDashengLMPreTrainedModel(PreTrainedModel):
    config_class = MiDashengLMConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _no_split_modules = ["Block", "Qwen2DecoderLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()


class MiDashengLMModel(MiDashengLMPreTrainedModel):
    def __init__(self, config: MiDashengLMConfig):
        super().__init__(config)
        self.audio_encoder = DashengAudioTransformer(config.audio_encoder_config)
        self.audio_projector = AudioProjectorSubsample(
            config.audio_encoder_config.embed_dim,
            config.text_config.hidden_size,
            config.subsample_factor,
        )
        self.decoder = Qwen2ForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.decoder.get_input_embeddings()

    def _audio_embeddings(self, input_values, audio_length) -> list[torch.Tensor]:
        frames, mask = self.audio_encoder(input_values, audio_length)
        tokens, _ = self.audio_projector(frames, mask)
        hop = self.config.audio_encoder_config.hop_length
        counts = [num_audio_tokens(int(n), hop, self.config.subsample_factor) for n in audio_length]
        return [tokens[i, :c] for i, c in enumerate(counts)]

    def _merge(self, input_ids, input_values, audio_length):
        embeds = self.get_input_embeddings()(input_ids)
        if input_values is None:
            return embeds
        audio = self._audio_embeddings(input_values, audio_length)
        is_audio = input_ids == self.config.audio_token_id
        for i, a in enumerate(audio):
            n = int(is_audio[i].sum())
            if n != a.shape[0]:
                raise ValueError(f"row {i}: {n} audio tokens but {a.shape[0]} audio embeddings")
        embeds = embeds.clone()
        embeds[is_audio] = torch.cat(audio).to(embeds.dtype)
        return embeds

    def forward(
        self, input_ids=None, attention_mask=None, input_values=None, audio_length=None, **kw
    ):
        embeds = self._merge(input_ids, input_values, audio_length)
        return self.decoder(inputs_embeds=embeds, attention_mask=attention_mask, **kw)

    @torch.no_grad()
    def generate(
        self, input_ids=None, attention_mask=None, input_values=None, audio_length=None, **kw
    ):
        embeds = self._merge(input_ids, input_values, audio_length)
        return self.decoder.generate(inputs_embeds=embeds, attention_mask=attention_mask, **kw)
