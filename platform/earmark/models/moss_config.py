"""Config classes of MOSS-Audio: accept the release `config.json` as is (`model_type` "moss_audio").

Top level: `audio_config` (encoder), `language_config` (a Qwen3 config), `adapter_hidden_size`,
`deepstack_num_inject_layers`; earmark adds optional `audio_token_id` / `audio_start_id` /
`audio_end_id` (official values by default) so small test vocabularies can carry their own ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig, Qwen3Config

# Official special ids (processor constants of the release; the hub tokenizer has no strings for
# 151669/151670, so ids are inserted directly). Overridable per checkpoint in config.json.
AUDIO_TOKEN_ID = 151654
AUDIO_START_ID = 151669
AUDIO_END_ID = 151670
CONV_STRIDE = 2  # each of the three stem convolutions halves time and frequency
POS_MAX_TIMESCALE = 10_000.0  # sinusoidal positions, Whisper convention


def downsampled_length(mel_frames: int) -> int:
    """Audio tokens for a log-mel of `mel_frames` frames: ceil-halved three times (3000 -> 375)."""
    n = int(mel_frames)
    for _ in range(3):
        n = (n - 1) // CONV_STRIDE + 1
    return n


class MossAudioEncoderConfig(PretrainedConfig):
    """`audio_config` of the release. `n_window` (200 in the release): the encoder attends
    within chunks of 2 × n_window mel frames (4 s); None attends over the whole window."""

    model_type = "moss_audio_encoder"

    def __init__(
        self,
        d_model: int = 1280,
        output_dim: int = 1280,
        num_mel_bins: int = 128,
        encoder_layers: int = 32,
        encoder_attention_heads: int = 20,
        encoder_ffn_dim: int = 5120,
        downsample_rate: int = 8,
        downsample_hidden_size: int = 480,
        max_source_positions: int = 1500,
        layer_norm_eps: float = 1e-5,
        activation_function: str = "gelu",
        deepstack_encoder_layer_indexes: Sequence[int] | None = (8, 16, 24),
        n_window: int | None = 200,
        **kwargs: Any,
    ) -> None:
        self.n_window = n_window
        self.d_model = d_model
        self.output_dim = output_dim
        self.num_mel_bins = num_mel_bins
        self.encoder_layers = encoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.encoder_ffn_dim = encoder_ffn_dim
        self.downsample_rate = downsample_rate
        self.downsample_hidden_size = downsample_hidden_size
        self.max_source_positions = max_source_positions
        self.layer_norm_eps = layer_norm_eps
        self.activation_function = activation_function
        self.deepstack_encoder_layer_indexes = list(deepstack_encoder_layer_indexes or [])
        super().__init__(**kwargs)


class MossAudioConfig(PretrainedConfig):
    """Top-level config; accepts the release `config.json` as is (`model_type` "moss_audio")."""

    model_type = "moss_audio"
    sub_configs = {"audio_config": MossAudioEncoderConfig, "language_config": Qwen3Config}

    def __init__(
        self,
        audio_config: dict | MossAudioEncoderConfig | None = None,
        language_config: dict | Qwen3Config | None = None,
        adapter_hidden_size: int = 8192,
        deepstack_num_inject_layers: int | None = None,
        audio_token_id: int = AUDIO_TOKEN_ID,
        audio_start_id: int = AUDIO_START_ID,
        audio_end_id: int = AUDIO_END_ID,
        **kwargs: Any,
    ) -> None:
        if isinstance(audio_config, dict):
            audio_config = MossAudioEncoderConfig(**audio_config)
        if isinstance(language_config, dict):
            language_config = Qwen3Config(**language_config)
        self.audio_config = MossAudioEncoderConfig() if audio_config is None else audio_config
        self.language_config = Qwen3Config() if language_config is None else language_config
        self.adapter_hidden_size = adapter_hidden_size
        self.deepstack_num_inject_layers = deepstack_num_inject_layers
        self.audio_token_id = audio_token_id
        self.audio_start_id = audio_start_id
        self.audio_end_id = audio_end_id
        kwargs.setdefault("tie_word_embeddings", False)  # the release has an untied lm_head
        super().__init__(**kwargs)

    def get_text_config(self, *args: Any, **kwargs: Any) -> PretrainedConfig:
        return self.language_config

    @property
    def num_deepstack(self) -> int:
        """DeepStack mergers (= injected decoder layers): min(#encoder indexes, inject cap)."""
        k = len(self.audio_config.deepstack_encoder_layer_indexes)
        if self.deepstack_num_inject_layers is not None:
            k = min(k, int(self.deepstack_num_inject_layers))
        return k
