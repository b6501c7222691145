"""Shared plumbing of the transformers remote-code backends (eureka, midashenglm).

Checkpoint checks that name the cause (missing directory, missing files, another family's
checkpoint), tokenizer and chat template loading (generation plumbing: hf_generate.py).
torch/transformers are imported inside
functions so that importing this module stays light.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import Any

from earmark.models.base import ModelLoadError, attn_implementation, torch_dtype

log = logging.getLogger(__name__)

# What each family's config.json says about itself (architectures / model_type / auto_map),
# lowercase substrings. Used to refuse a checkpoint of another family with a clear message.
FAMILY_MARKERS: dict[str, tuple[str, ...]] = {
    "eureka": ("eureka",),
    "midashenglm": ("dasheng",),
    "moss": ("moss",),
    "whisper": ("whisper",),
}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


def looks_like_path(checkpoint: str) -> bool:
    """A local path rather than a hub id ("owner/name")."""
    return (
        os.path.exists(checkpoint)
        or checkpoint.startswith((".", "/", "~"))
        or checkpoint.count("/") > 1
        or os.sep != "/"
        and os.sep in checkpoint
    )


def check_local_dir(path: str, family: str) -> None:
    """Refuse a local checkpoint directory that cannot load, naming what is missing."""
    if not os.path.isdir(path):
        raise ModelLoadError(f"{family} checkpoint directory {path!r} does not exist")
    missing = []
    if not os.path.isfile(os.path.join(path, "config.json")):
        missing.append("config.json")
    if not any(glob.glob(os.path.join(path, p)) for p in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or *.bin)")
    if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        missing.append("tokenizer (tokenizer.json or vocab.json)")
    if missing:
        raise ModelLoadError(
            f"{family} checkpoint directory {path!r} is missing {', '.join(missing)}"
        )
    config = read_config(path, family)
    for ref in (config.get("auto_map") or {}).values():
        ref = ref[0] if isinstance(ref, list) else ref
        if "--" in ref:  # code from another repository: resolved by transformers
            continue
        module = ref.rsplit(".", 1)[0]
        if not os.path.isfile(os.path.join(path, module + ".py")):
            raise ModelLoadError(
                f"{family} checkpoint directory {path!r} is missing {module}.py "
                f"(named by auto_map in config.json; the model's remote code)"
            )


def read_config(checkpoint: str, family: str, revision: str | None = None) -> dict[str, Any]:
    """config.json of a local directory or hub checkpoint, as a dict."""
    if os.path.isdir(checkpoint):
        file = os.path.join(checkpoint, "config.json")
    else:
        from transformers.utils import cached_file

        try:
            file = cached_file(checkpoint, "config.json", revision=revision)
        except Exception as e:  # hub errors come in many classes; all stop the load
            raise ModelLoadError(
                f"cannot fetch config.json of {family} checkpoint {checkpoint!r}: {e}"
            ) from e
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"config.json of {checkpoint!r} is unreadable: {e}") from e


def check_family(config: dict[str, Any], family: str, checkpoint: str) -> None:
    """Refuse a checkpoint whose config names another family (or none we know)."""
    auto_map = config.get("auto_map") or {}
    words = [str(a) for a in config.get("architectures") or []]
    words += [str(config.get("model_type", ""))]
    words += [str(v) for v in auto_map.values()]
    text = " ".join(words).lower()
    if any(m in text for m in FAMILY_MARKERS.get(family, (family,))):
        return
    described = (
        f"architectures={config.get('architectures')}, model_type={config.get('model_type')!r}"
    )
    for other, markers in FAMILY_MARKERS.items():
        if other != family and any(m in text for m in markers):
            raise ModelLoadError(
                f"checkpoint {checkpoint!r} is a {other} checkpoint ({described}), "
                f"not {family}; use --model {other}:{checkpoint}"
            )
    raise ModelLoadError(f"checkpoint {checkpoint!r} is not a {family} checkpoint ({described})")


def validate_checkpoint(
    checkpoint: str, family: str, revision: str | None = None
) -> tuple[bool, str]:
    """Check a checkpoint before loading: (is it a local directory, its resolved name)."""
    local = looks_like_path(checkpoint)
    if local:
        checkpoint = os.path.expanduser(checkpoint)
        check_local_dir(checkpoint, family)
    check_family(read_config(checkpoint, family, revision), family, checkpoint)
    return local, checkpoint


def load_remote_model(
    checkpoint: str, family: str, *, device: str, dtype: str, revision: str | None, local: bool
) -> Any:
    """`AutoModelForCausalLM` with trust_remote_code, offline for local directories."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(
        trust_remote_code=True,
        dtype=torch_dtype(dtype),
        revision=revision,
        local_files_only=local,
    )
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                checkpoint, attn_implementation=attn_implementation(), **kwargs
            )
        except ValueError as e:
            # remote code that does not declare SDPA/flash support: let it pick its default
            if "attn" not in str(e).lower() and "attention" not in str(e).lower():
                raise
            log.warning("%s: %s; loading with the model's default attention", family, e)
            model = AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load {family} checkpoint {checkpoint!r}: {e}") from e
    return model.to(device).eval()


def load_tokenizer(checkpoint: str, family: str, revision: str | None, local: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            checkpoint, trust_remote_code=True, revision=revision, local_files_only=local
        )
    except Exception as e:
        raise ModelLoadError(f"cannot load the tokenizer of {checkpoint!r}: {e}") from e


def optional_file(checkpoint: str, name: str, revision: str | None, local: bool) -> str | None:
    """Path of an optional checkpoint file, or None when the checkpoint has none."""
    if local:
        path = os.path.join(os.path.expanduser(checkpoint), name)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    try:
        return cached_file(
            checkpoint,
            name,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except Exception:  # absent or unreachable: the caller falls back
        return None


def token_id(tokenizer: Any, token: str, checkpoint: str) -> int:
    """Id of a special token, looked up by its string (ids differ between checkpoints)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ModelLoadError(f"the tokenizer of {checkpoint!r} has no {token} token")
    return int(tid)


def load_chat_template(
    tokenizer: Any, checkpoint: str, revision: str | None, local: bool
) -> str | None:
    """The processor's chat_template.json when shipped (what the references use), else the
    tokenizer's own template, else None (callers then render the documented format by hand)."""
    file = optional_file(checkpoint, "chat_template.json", revision, local)
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                template = json.load(f).get("chat_template")
            if template:
                return template
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            log.warning("ignoring unreadable %s: %s", file, e)
    return getattr(tokenizer, "chat_template", None) or None
