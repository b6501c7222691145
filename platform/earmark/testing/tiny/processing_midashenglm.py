"""Stand-in for MiDashengLM's remote processor (tests only): what vLLM's MiDashengLM asks of a
checkpoint's processor, so that vLLM runs a tiny checkpoint.

`processor(text=..., audio=[waveform, ...])` returns the tokenized text with every `<|AUDIO|>`
repeated once per audio token, plus `input_values` (the 16 kHz waveforms, not normalized,
right-padded with zeros by the feature extractor) and `audio_length` (their real lengths). A
waveform of n samples gives int(1 + n / 160) // 4 // 5 tokens (mel frames with centring, 4
frames a patch, 5 patches a token; at least 1). A placeholder the text does not already wrap in
`<|audio_bos|>`/`<|audio_eos|>` gets them. vLLM reads `audio_token`, `audio_bos_token`,
`audio_eos_token` and `feature_extractor.sampling_rate` from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

HOP = 160  # samples per mel frame
PATCH_FRAMES = 4  # mel frames per encoder patch
TEXT_OPTIONS = ("add_special_tokens", "padding", "padding_side", "truncation", "max_length")


def audio_token_count(num_samples: int, subsample: int = 5) -> int:
    return max(1, int(1 + num_samples / HOP) // PATCH_FRAMES // subsample)


class MiDashengLMProcessor(ProcessorMixin):
    attributes = ["feature_extractor", "tokenizer"]
    feature_extractor_class = "Wav2Vec2FeatureExtractor"
    tokenizer_class = "PreTrainedTokenizerFast"

    def __init__(
        self,
        feature_extractor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        audio_token: str = "<|AUDIO|>",
        audio_bos_token: str = "<|audio_bos|>",
        audio_eos_token: str = "<|audio_eos|>",
        model_subsampling: int = 5,
    ):
        if getattr(feature_extractor, "do_normalize", False):
            raise ValueError("MiDashengLM takes the raw waveform: set do_normalize=False")
        self.audio_token = audio_token
        self.audio_bos_token = audio_bos_token
        self.audio_eos_token = audio_eos_token
        self.model_subsampling = model_subsampling
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def _expand(self, text: str, counts: list[int]) -> str:
        """`text` with each audio placeholder repeated counts.pop(0) times."""
        parts = text.split(self.audio_token)
        out = [parts[0]]
        for part in parts[1:]:
            run = self.audio_token * counts.pop(0)
            wrapped = out[-1].endswith(self.audio_bos_token) or part.startswith(
                self.audio_eos_token
            )
            if not wrapped:
                run = self.audio_bos_token + run + self.audio_eos_token
            out += [run, part]
        return "".join(out)

    def __call__(self, text: Any = None, audio: Any = None, **kwargs: Any) -> BatchFeature:
        if text is None:
            raise ValueError("MiDashengLMProcessor needs text")
        if kwargs.get("images") is not None or kwargs.get("videos") is not None:
            raise ValueError("MiDashengLM takes audio only")
        texts = [text] if isinstance(text, str) else list(text)
        rate = kwargs.get("sampling_rate")
        if rate is not None and int(rate) != self.sampling_rate:
            raise ValueError(f"audio must be {self.sampling_rate} Hz, not {rate}")
        tensors = kwargs.get("return_tensors") or "pt"
        data: dict[str, Any] = {}
        if audio is not None:
            waves = [audio] if getattr(audio, "ndim", 0) == 1 else list(audio)
            placeholders = sum(t.count(self.audio_token) for t in texts)
            if placeholders != len(waves):
                raise ValueError(
                    f"{placeholders} {self.audio_token} in the text, {len(waves)} audios"
                )
            feats = self.feature_extractor(
                [np.asarray(w, dtype=np.float32) for w in waves],
                sampling_rate=self.sampling_rate,
                padding=True,
                return_attention_mask=True,
                return_tensors="pt",
            )
            lengths = feats["attention_mask"].sum(-1).long()
            data["input_values"] = feats["input_values"]
            data["audio_length"] = lengths
            counts = [audio_token_count(int(n), self.model_subsampling) for n in lengths]
            texts = [self._expand(t, counts) for t in texts]
        options = {k: kwargs[k] for k in TEXT_OPTIONS if k in kwargs}
        options.setdefault("padding", True)
        data.update(self.tokenizer(texts, return_tensors="pt", **options))
        return BatchFeature(data=data, tensor_type=tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_values", "audio_length"]
