"""Stand-in configuration for the Eureka-Audio remote code (tests and benchmarks only).

The real `configuration_eureka_audio.py` is not public; this one carries what the stand-in model
needs: a Whisper encoder config, a Qwen3 text config and placeholder MoE-adapter sizes.
"""

from transformers import PretrainedConfig, Qwen3Config, WhisperConfig


class EurekaAudioConfig(PretrainedConfig):
    model_type = "eureka_audio"
    sub_configs = {"audio_config": WhisperConfig, "text_config": Qwen3Config}

    def __init__(
        self,
        audio_config=None,
        text_config=None,
        adaptor_num_experts: int = 4,
        adaptor_top_k: int = 2,
        adaptor_ffn_dim: int = 128,
        adaptor_downsample: int = 4,
        audio_pad_token_id: int | None = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if isinstance(audio_config, dict):
            audio_config = WhisperConfig(**audio_config)
        if isinstance(text_config, dict):
            text_config = Qwen3Config(**text_config)
        self.audio_config = audio_config if audio_config is not None else WhisperConfig()
        self.text_config = text_config if text_config is not None else Qwen3Config()
        self.adaptor_num_experts = adaptor_num_experts
        self.adaptor_top_k = adaptor_top_k
        self.adaptor_ffn_dim = adaptor_ffn_dim
        self.adaptor_downsample = adaptor_downsample
        self.audio_pad_token_id = audio_pad_token_id
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
