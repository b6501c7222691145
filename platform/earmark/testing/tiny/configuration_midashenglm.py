"""Stand-in configuration for MiDashengLM's remote code (tests and benchmarks only).

Key names follow the published config (`audio_encoder_config`, `subsample_factor`, `text_config`,
`audio_token_id`), which vLLM's own MiDashengLM config class reads too; values are tiny.
"""

from transformers import PretrainedConfig, Qwen2Config


class DashengConfig(PretrainedConfig):
    model_type = "dasheng"

    def __init__(
        self,
        embed_dim: int = 32,
        depth: int = 2,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        n_mels: int = 64,
        patch_size=(64, 4),
        patch_stride=(64, 4),
        target_length: int = 1008,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 512,
        hop_length: int = 160,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        center: bool = True,
        input_channels: int = 1,
        init_values: float | None = None,
        **kwargs,
    ):
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.qkv_bias = qkv_bias
        self.n_mels = n_mels
        self.patch_size = list(patch_size)
        self.patch_stride = list(patch_stride)
        self.target_length = target_length
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.f_min = f_min
        self.f_max = f_max
        self.center = center
        self.input_channels = input_channels
        self.init_values = init_values  # LayerScale of each block's two branches, when set
        super().__init__(**kwargs)


class MiDashengLMConfig(PretrainedConfig):
    model_type = "midashenglm"
    sub_configs = {"audio_encoder_config": DashengConfig, "text_config": Qwen2Config}

    def __init__(
        self,
        audio_encoder_config=None,
        text_config=None,
        subsample_factor: int = 5,
        audio_token_id: int | None = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if isinstance(audio_encoder_config, dict):
            audio_encoder_config = DashengConfig(**audio_encoder_config)
        if isinstance(text_config, dict):
            text_config = Qwen2Config(**text_config)
        self.audio_encoder_config = audio_encoder_config or DashengConfig()
        self.text_config = text_config or Qwen2Config()
        self.subsample_factor = subsample_factor
        self.audio_token_id = audio_token_id
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
