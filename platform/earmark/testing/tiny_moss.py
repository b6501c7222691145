"""Build a tiny, randomly initialized MOSS-Audio checkpoint directory, offline (for tests/demos).

Same files and weight names as a release: `config.json` (`model_type` "moss_audio"),
`model.safetensors`, and a tokenizer that knows the chat and audio tokens. The tokenizer is a
byte-level BPE trained here on a few prompt strings, so any text encodes; its special ids are small,
so the config carries them (`audio_token_id`, `audio_start_id`, `audio_end_id`) instead of the
official 151654/151669/151670. Run `python -m earmark.testing.tiny_moss DIR` to write one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
]
BPE_VOCAB = 360  # 256 byte symbols + specials + a few merges
CORPUS = [
    "You are a helpful assistant.",
    "Please transcribe this audio.",
    "Describe this audio.",
    "Which labels describe the sounds in this audio? Answer with a short list of labels.",
    "speech, music, dog barking, rain; the speaker says hello world 0 1 2 3 4 5 6 7 8 9",
    "system user assistant",
]


def tiny_tokenizer() -> Any:
    """A PreTrainedTokenizerFast with the MOSS chat/audio tokens as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def tiny_config(tokenizer: Any, **overrides: Any) -> Any:
    """A MossAudioConfig of well under 1M parameters with the release's structure.

    5 decoder layers with 3 DeepStack layers, so the tests can check that layers 3 and 4 are
    left alone; encoder layers 1, 2, 3 feed DeepStack.
    """
    from earmark.models.moss_arch import MossAudioConfig

    tid = tokenizer.convert_tokens_to_ids
    kw: dict[str, Any] = {
        "audio_config": {
            "d_model": 64,
            "output_dim": 64,
            "num_mel_bins": 128,
            "encoder_layers": 4,
            "encoder_attention_heads": 4,
            "encoder_ffn_dim": 128,
            "downsample_hidden_size": 8,
            "deepstack_encoder_layer_indexes": [1, 2, 3],
        },
        "language_config": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 5,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 4096,
            "rope_theta": 1_000_000.0,
            "eos_token_id": tid("<|im_end|>"),
            "tie_word_embeddings": False,
        },
        "adapter_hidden_size": 128,
        "deepstack_num_inject_layers": 3,
        "audio_token_id": tid("<|AUDIO|>"),
        "audio_start_id": tid("<|audio_bos|>"),
        "audio_end_id": tid("<|audio_eos|>"),
        "eos_token_id": tid("<|im_end|>"),
        "architectures": ["MossAudioModel"],
    }
    kw.update(overrides)
    return MossAudioConfig(**kw)


# vLLM's MOSS processor writes the release's token ids itself (placeholders and the digits of
# time markers), so a checkpoint it runs needs Qwen's id layout for them
QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|AUDIO|>": 151654,
    "<|audio_bos|>": 151669,
    "<|audio_eos|>": 151670,
}
QWEN_VOCAB = 151671


def _byte_symbols() -> list[str]:
    """The 256 byte-level BPE symbols in GPT-2's order (printable bytes first, the rest shifted
    past 255), which Qwen's first 256 ids follow: "0"-"9" are ids 15-24."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(shifted)}
    return [table[b] for b in [*printable, *shifted]]


def qwen_layout_tokenizer() -> Any:
    """A byte-level tokenizer (no merges) with Qwen's ids for bytes and the MOSS special
    tokens; the ids between are unused fillers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {sym: i for i, sym in enumerate(_byte_symbols())}
    by_id = {i: t for t, i in QWEN_SPECIAL_IDS.items()}
    for i in range(256, QWEN_VOCAB):
        vocab[by_id.get(i, f"<|unused_{i}|>")] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(QWEN_SPECIAL_IDS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def build_tiny_moss(
    out_dir: str | Path,
    *,
    seed: int = 0,
    init_std: float = 0.02,
    vllm_ready: bool = False,
    **config_overrides: Any,
) -> Path:
    """Write config.json + model.safetensors + tokenizer files into out_dir; return the path.

    `config_overrides` go into config.json (e.g. `enable_time_marker=False`). `vllm_ready`: a
    checkpoint vLLM's MOSS-Audio runs too — Qwen's token ids (about 80 MB of embeddings), a
    head_dim of 32 (vLLM's CPU attention refuses 16), earmark's config class beside the weights
    for `trust_remote_code` (transformers does not know "moss_audio"), and the processor's
    time-marker setting in processor_config.json.
    """
    import json

    import torch

    from earmark.models.moss_arch import MossAudioModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_layout_tokenizer() if vllm_ready else tiny_tokenizer()
    if vllm_ready:
        lc = dict(tiny_config(tokenizer).language_config.to_dict())
        lc.update(head_dim=32, num_attention_heads=2, num_key_value_heads=1)
        config_overrides.setdefault("language_config", lc)
    config = tiny_config(tokenizer, **config_overrides)
    config.language_config.initializer_range = init_std
    torch.manual_seed(seed)
    model = MossAudioModel(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if vllm_ready:
        from earmark.models import moss_config

        raw = json.loads((out / "config.json").read_text())
        raw["auto_map"] = {"AutoConfig": "configuration_moss_audio.MossAudioConfig"}
        (out / "config.json").write_text(json.dumps(raw, indent=2))
        (out / "configuration_moss_audio.py").write_text(Path(moss_config.__file__).read_text())
        markers = bool(raw.get("enable_time_marker", True))
        (out / "processor_config.json").write_text(json.dumps({"enable_time_marker": markers}))
    return out


if __name__ == "__main__":
    print(build_tiny_moss(sys.argv[1] if len(sys.argv) > 1 else "tiny-moss"))
