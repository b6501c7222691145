"""Find, check and load a MOSS-Audio checkpoint directory, strictly by the official weight names.

A checkpoint is a directory with `config.json` (`model_type` "moss_audio"), `model.safetensors`
(or a sharded `model.safetensors.index.json`) and a tokenizer (`tokenizer.json`, or `vocab.json` +
`merges.txt`). Weight names are compared with the architecture's before any tensor is read, so a
missing or unexpected key stops the load with its name instead of leaving a layer randomly
initialized. Imported only from `MossModel.__init__` (it imports torch/transformers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from earmark.models.base import ModelLoadError

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja"]
SHOWN_KEYS = 5  # key names quoted in an error message


def local_dir(checkpoint: str, revision: str | None = None) -> Path:
    """The checkpoint directory: a local path as is, a hub id through the hub cache/download."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        return path
    if path.exists() or checkpoint.startswith(("/", ".", "~")) or checkpoint.count("/") != 1:
        raise ModelLoadError(f"MOSS-Audio checkpoint directory {checkpoint!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(checkpoint, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, no permission: one clear message
        raise ModelLoadError(
            f"cannot get MOSS-Audio checkpoint {checkpoint!r} from the hub ({exc}); "
            "download it and pass the local directory"
        ) from exc


def check_files(path: Path) -> dict[str, Any]:
    """Raw config.json of a complete checkpoint; ModelLoadError naming what is missing."""
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(f"{cfg_file} is missing: not a MOSS-Audio checkpoint")
    raw = json.loads(cfg_file.read_text())
    if raw.get("model_type") != "moss_audio":
        raise ModelLoadError(
            f"{cfg_file} has model_type {raw.get('model_type')!r}, expected 'moss_audio'"
        )
    if not (path / WEIGHTS).is_file() and not (path / WEIGHTS_INDEX).is_file():
        raise ModelLoadError(f"{path / WEIGHTS} (or {WEIGHTS_INDEX}) is missing")
    if not (path / "tokenizer.json").is_file():
        for name in ("vocab.json", "merges.txt"):
            if not (path / name).is_file():
                raise ModelLoadError(f"{path / name} (or tokenizer.json) is missing")
    return raw


def weight_names(path: Path) -> set[str]:
    """Tensor names stored in the checkpoint (safetensors headers only, no tensor is read)."""
    from safetensors import safe_open

    index = path / WEIGHTS_INDEX
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    with safe_open(str(path / WEIGHTS), framework="pt") as f:
        return set(f.keys())


def check_names(expected: set[str], found: set[str], where: str) -> None:
    """Fail naming the first missing / unexpected weight names."""
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key(s) {', '.join(missing[:SHOWN_KEYS])}")
        if extra:
            parts.append(f"unexpected key(s) {', '.join(extra[:SHOWN_KEYS])}")
        raise ModelLoadError(
            f"{where} does not match the MOSS-Audio architecture: " + "; ".join(parts)
        )


def expected_names(config: Any) -> set[str]:
    """State-dict names of the architecture for `config`, built on the meta device (no memory)."""
    import torch

    from earmark.models.moss_arch import MossAudioModel

    with torch.device("meta"):
        return set(MossAudioModel(config).state_dict())


def load(path: Path, *, dtype: Any, device: str, attn: str) -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode on device, tokenizer, special ids) for a checked checkpoint dir."""
    from earmark.models.moss_arch import MossAudioConfig, MossAudioModel

    config = MossAudioConfig.from_pretrained(path)
    check_names(expected_names(config), weight_names(path), str(path))
    model, info = MossAudioModel.from_pretrained(
        path, config=config, dtype=dtype, attn_implementation=attn, output_loading_info=True
    )
    found = set(model.state_dict()) - set(info["missing_keys"]) | set(info["unexpected_keys"])
    check_names(set(model.state_dict()), found, str(path))  # second guard, same message
    if info.get("mismatched_keys"):
        raise ModelLoadError(f"{path}: weights of the wrong shape: {info['mismatched_keys'][:5]}")
    model = model.to(device).eval()
    return (model, *tokenizer_ids(path, config))


def tokenizer_ids(path: Path, config: Any = None) -> tuple[Any, dict[str, Any]]:
    """(tokenizer, special ids) of a checked checkpoint dir, without its weights (the vLLM
    engine needs only these on earmark's side)."""
    from transformers import AutoTokenizer

    from earmark.models.moss_arch import MossAudioConfig

    config = config if config is not None else MossAudioConfig.from_pretrained(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {path}: {exc}") from exc
    explicit = set(json.loads((path / "config.json").read_text()))
    return tokenizer, special_ids(tokenizer, config, explicit)


def special_ids(tokenizer: Any, config: Any, explicit: set[str] = frozenset()) -> dict[str, Any]:
    """Ids the prompt builder needs; audio ids from config, the chat ids looked up by string.

    Audio ids set explicitly in config.json must agree with a tokenizer that knows their strings;
    without them (the releases) the official ids are used whatever the tokenizer says.
    """

    def lookup(token: str) -> int | None:
        tid = tokenizer.convert_tokens_to_ids(token)
        return None if tid is None or tid == tokenizer.unk_token_id else int(tid)

    ids: dict[str, Any] = {}
    for key, cfg_key, token in (
        ("audio", "audio_token_id", "<|AUDIO|>"),
        ("audio_start", "audio_start_id", "<|audio_bos|>"),
        ("audio_end", "audio_end_id", "<|audio_eos|>"),
    ):
        ids[key] = int(getattr(config, cfg_key))
        tid = lookup(token)
        if cfg_key in explicit and tid is not None and tid != ids[key]:
            raise ModelLoadError(f"tokenizer maps {token} to {tid} but config says {ids[key]}")
    im_end, eot = lookup("<|im_end|>"), lookup("<|endoftext|>")
    if im_end is None or lookup("<|im_start|>") is None:
        raise ModelLoadError("tokenizer lacks the chat tokens <|im_start|> / <|im_end|>")
    eos = config.language_config.eos_token_id
    stop = {im_end, eot, tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])}
    ids["stop"] = sorted(int(t) for t in stop if t is not None)
    # Digits "0".."9" are ids 15..24 in the Qwen vocabulary; looked up so small vocabularies work.
    ids["digits"] = [lookup(str(d)) if lookup(str(d)) is not None else 15 + d for d in range(10)]
    pad = tokenizer.pad_token_id
    ids["pad"] = int(pad if pad is not None else (eot if eot is not None else im_end))
    if ids["pad"] == ids["audio"]:
        raise ModelLoadError("the padding id equals the audio placeholder id")
    return ids
