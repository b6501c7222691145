"""Builders behind `build_tiny_checkpoint` (import torch/transformers; used by tests/benchmarks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from earmark.audio.features import slaney_mel_filters
from earmark.testing.tiny.tokenizer import build_tokenizer

HERE = Path(__file__).parent
EMBED_STD = 0.5  # std of token embeddings / LM head: large enough for clear greedy argmaxes

EUREKA_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_pad|>",
    "<|audio_end|>",
]
DASHENG_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
]


def chat_template(audio: str, thinking_switch: bool = False) -> str:
    """A Qwen-style chat template: content is a string or a list of {"type": "audio"|"text"}
    items, an audio item rendered as `audio` (the family's placeholder tokens). With
    `thinking_switch`, `enable_thinking=False` adds an empty think block (Qwen3-Omni style)."""
    think = (
        "\n{%- if enable_thinking is defined and not enable_thinking -%}"
        "{{- '<think>\\n\\n</think>\\n\\n' -}}\n{%- endif -%}"
    )
    return (
        "{%- for message in messages -%}\n"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}\n"
        "{%- if message['content'] is string -%}{{- message['content'] -}}\n"
        "{%- else -%}{%- for item in message['content'] -%}\n"
        "{%- if item['type'] == 'audio' -%}{{- '" + audio + "' -}}\n"
        "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}\n"
        "{%- endfor -%}{%- endif -%}\n"
        "{{- '<|im_end|>\\n' -}}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
        + (think if thinking_switch else "")
        + "{%- endif -%}"
    )


EUREKA_CHAT_TEMPLATE = chat_template("<|audio_start|><|audio_pad|><|audio_end|>", True)
DASHENG_CHAT_TEMPLATE = chat_template("<|audio_bos|><|AUDIO|><|audio_eos|>")


def _padded_vocab(n: int, extra: int = 16, multiple: int = 8) -> int:
    """Model vocab larger than the tokenizer, like Qwen's (ids past the tokenizer get dropped)."""
    return -(-(n + extra) // multiple) * multiple


def _unwanted_ids(tok) -> list[int]:
    """Special tokens and byte pieces that do not decode to printable text."""
    bad = set(tok.all_special_ids)
    for i in range(len(tok)):
        s = tok.decode([i])
        if not s or "\ufffd" in s or not s.replace(" ", "x").isprintable():
            bad.add(i)
    return sorted(bad)


def _rescale_linears(model) -> None:
    """Unit-gain random projections (std 1/sqrt(fan_in)) instead of HF's std 0.02 init.

    With 0.02 the tiny decoder barely mixes positions and its text ignores the audio; at unit
    gain the audio changes the output, which the batch-invariance tests need to be meaningful.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.data.normal_(0.0, module.in_features**-0.5)


def _copy_code(path: Path, names: list[str]) -> None:
    for name in names:
        shutil.copyfile(HERE / name, path / name)


def _finish(model, path: Path, auto_map: dict, code: list[str]) -> Path:
    model.config.auto_map = auto_map
    model.save_pretrained(path, safe_serialization=True)
    _copy_code(path, code)
    return path


def _text_config(tok, ids: dict[str, int], **extra) -> dict:
    """The tiny Qwen-style LLM of a stand-in checkpoint; `extra` adds or overrides keys."""
    config = dict(
        vocab_size=_padded_vocab(len(tok)),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,  # the real LLMs may tie; a tied *random* model repeats itself
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return config | extra


def _init_embeddings(lm, tok) -> None:
    """Random input embeddings and LM head; logit 0 for specials and bytes, so random text
    never picks them."""
    lm.get_input_embeddings().weight.normal_(0.0, EMBED_STD)
    head = lm.get_output_embeddings().weight
    head.normal_(0.0, EMBED_STD)
    head[_unwanted_ids(tok)] = 0.0


def build_eureka(path: Path, *, seed: int = 0) -> Path:
    from earmark.testing.tiny.configuration_eureka_audio import EurekaAudioConfig
    from earmark.testing.tiny.modeling_eureka_audio import EurekaAudioForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(
        EUREKA_SPECIALS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_tokens=("<think>", "</think>"),
    )
    tok.save_pretrained(path)
    # the template ships as the processor's chat_template.json, as in the real checkpoint
    (path / "chat_template.json").write_text(json.dumps({"chat_template": EUREKA_CHAT_TEMPLATE}))
    np.savez(path / "mel_filters.npz", mel_128=slaney_mel_filters())
    ids = {t: tok.convert_tokens_to_ids(t) for t in EUREKA_SPECIALS}
    audio = dict(
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=4,
        encoder_ffn_dim=128,
        num_mel_bins=128,
        max_source_positions=1500,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=128,
        vocab_size=64,
        max_target_positions=64,
    )
    text = _text_config(tok, ids, head_dim=16)
    config = EurekaAudioConfig(
        audio_config=audio,
        text_config=text,
        audio_pad_token_id=ids["<|audio_pad|>"],
        architectures=["EurekaAudioForCausalLM"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = EurekaAudioForCausalLM(config).eval()
    with torch.no_grad():
        _rescale_linears(model)
        _init_embeddings(model.backbone, tok)
    return _finish(
        model,
        path,
        {
            "AutoConfig": "configuration_eureka_audio.EurekaAudioConfig",
            "AutoModelForCausalLM": "modeling_eureka_audio.EurekaAudioForCausalLM",
        },
        ["configuration_eureka_audio.py", "modeling_eureka_audio.py"],
    )


# the processor files of a MiDashengLM checkpoint, which vLLM loads (AutoProcessor, remote code)
DASHENG_FEATURE_EXTRACTOR = {
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "sampling_rate": 16_000,
    "padding_value": 0.0,
    "padding_side": "right",
    "do_normalize": False,  # the encoder takes the raw waveform
    "return_attention_mask": True,
    "processor_class": "MiDashengLMProcessor",
}
DASHENG_PROCESSOR = {
    "processor_class": "MiDashengLMProcessor",
    "auto_map": {"AutoProcessor": "processing_midashenglm.MiDashengLMProcessor"},
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "model_subsampling": 5,
}


def _write_json_keys(file: Path, top: dict, **sections: dict) -> None:
    """Set keys in a saved JSON file, at the top and inside named sub-objects (transformers
    leaves out values equal to its defaults, which other readers default differently)."""
    raw = json.loads(file.read_text())
    raw.update(top)
    for name, keys in sections.items():
        raw[name].update(keys)
    file.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")


def build_midashenglm(path: Path, *, seed: int = 0) -> Path:
    """A tiny MiDashengLM that earmark's backend (trust_remote_code) and vLLM's own MiDashengLM
    both load: the real weight names, a Qwen2 LLM with head_dim 32 (vLLM's CPU attention
    refuses 16), rope_theta and untied embeddings written out in config.json, and the
    processor files (preprocessor_config.json, processor_config.json, processing_midashenglm.py)
    vLLM's processing reads. The mel filters are computed, not saved, as in the release."""
    from earmark.testing.tiny.configuration_midashenglm import MiDashengLMConfig
    from earmark.testing.tiny.modeling_midashenglm import MiDashengLMModel

    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(
        DASHENG_SPECIALS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=DASHENG_CHAT_TEMPLATE,
    )
    tok.save_pretrained(path)
    ids = {t: tok.convert_tokens_to_ids(t) for t in DASHENG_SPECIALS}
    encoder = dict(
        embed_dim=32,
        depth=2,
        num_heads=2,
        n_mels=64,
        patch_size=[64, 4],
        patch_stride=[64, 4],
        target_length=1008,
    )
    text = _text_config(
        tok,
        ids,
        num_attention_heads=2,
        num_key_value_heads=1,
        rope_theta=1_000_000.0,  # Qwen2.5's, and what vLLM assumes when it finds none
    )
    config = MiDashengLMConfig(
        audio_encoder_config=encoder,
        text_config=text,
        subsample_factor=5,
        audio_token_id=ids["<|AUDIO|>"],
        architectures=["MiDashengLMModel"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    torch.manual_seed(seed)
    model = MiDashengLMModel(config).eval()
    with torch.no_grad():
        _rescale_linears(model)
        bn = model.audio_encoder.init_bn
        bn.running_mean.fill_(-40.0)  # dB mels: centre and scale them like a trained BN would
        bn.running_var.fill_(30.0**2)
        _init_embeddings(model.decoder, tok)
    _finish(
        model,
        path,
        {
            "AutoConfig": "configuration_midashenglm.MiDashengLMConfig",
            "AutoModelForCausalLM": "modeling_midashenglm.MiDashengLMModel",
        },
        ["configuration_midashenglm.py", "modeling_midashenglm.py", "processing_midashenglm.py"],
    )
    untied = {"tie_word_embeddings": False}
    _write_json_keys(
        path / "config.json",
        untied,
        text_config={**untied, "rope_theta": text["rope_theta"]},
    )
    (path / "preprocessor_config.json").write_text(json.dumps(DASHENG_FEATURE_EXTRACTOR, indent=2))
    (path / "processor_config.json").write_text(json.dumps(DASHENG_PROCESSOR, indent=2))
    return path
