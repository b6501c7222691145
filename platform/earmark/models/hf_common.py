"""Shared plumbing of the transformers remote-code backends (eureka, midashenglm).

Checkpoint checks that name the cause (missing directory, missing files, another family's
checkpoint), tokenizer loading, left padding and decoding. torch/transformers are imported inside
functions so that importing this module stays light.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Sequence
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


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: str) -> tuple[Any, Any]:
    """Left-padded ids [B, L] and attention mask (0 on padding)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def decode(tokenizer: Any, ids: Sequence[int], stop_ids: Sequence[int]) -> str:
    """Text of generated ids: cut at the first stop id, drop ids beyond the tokenizer's vocab."""
    out: list[int] = []
    limit = len(tokenizer)
    for t in ids:
        t = int(t)
        if t in stop_ids:
            break
        if t < limit:  # the LM head is wider than the vocabulary; those ids decode to nothing
            out.append(t)
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def greedy_kwargs(max_new_tokens: int, eos_ids: list[int], pad_id: int) -> dict[str, Any]:
    """Deterministic decoding that ignores sampling settings from generation_config.json."""
    return dict(
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )


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


def split_prompt(tokenizer: Any, text: str, audio_token: str, audio_id: int) -> tuple[list, list]:
    """Token ids before and after the single audio placeholder of a rendered prompt."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids.count(audio_id) != 1:
        raise ValueError(f"rendered prompt holds {ids.count(audio_id)} {audio_token} tokens")
    at = ids.index(audio_id)
    return ids[:at], ids[at + 1 :]


def strip_prompt(sequences: Any, prompt_ids: Any) -> Any:
    """New tokens of a generate output, whether or not it starts with the prompt."""
    import torch

    seq = getattr(sequences, "sequences", sequences)
    n = prompt_ids.shape[-1]
    if seq.shape[-1] >= n and torch.equal(seq[..., :n].to(prompt_ids.device), prompt_ids):
        return seq[..., n:]
    return seq


# ---------------------------------------------------------------------------------------------
# Greedy traces: generated ids with the scores (logits after repetition penalty) of each step,
# to check that two ways of running a model (batched vs one at a time) agree, allowing a flipped
# near-tie.
# ---------------------------------------------------------------------------------------------

Trace = tuple[list[int], Any]  # ids (through the first stop id), scores [steps, vocab]


def generated_rows(out: Any, prompt_ids: Any, stop_ids: Sequence[int], trace: bool) -> list[Trace]:
    """Per row: new ids cut after the first stop id, and (when traced) their step logits."""
    import torch

    new = strip_prompt(out, prompt_ids).tolist()
    logits = None
    if trace:
        logits = torch.stack(list(out.scores), dim=1).float().cpu().numpy()  # [B, steps, V]
    rows: list[Trace] = []
    for i, ids in enumerate(new):
        cut = next((k + 1 for k, t in enumerate(ids) if t in stop_ids), len(ids))
        rows.append((ids[:cut], None if logits is None else logits[i, :cut]))
    return rows


def trace_kwargs(trace: bool) -> dict[str, Any]:
    return dict(return_dict_in_generate=True, output_scores=True) if trace else {}


def compare_traces(a: Trace, b: Trace, atol: float = 1e-3, tie: float = 1e-3) -> str | None:
    """None when two greedy runs agree: same ids and close logits, or logits that stay close
    up to a step where `a` had a near-tie (top-2 gap < tie) and the runs picked differently."""
    import numpy as np

    (ids_a, log_a), (ids_b, log_b) = a, b
    steps = min(len(ids_a), len(ids_b))
    for k in range(steps):
        diff = float(np.abs(log_a[k] - log_b[k]).max())
        if diff > atol:
            return f"step {k}: logits differ by {diff:.2e} (> {atol})"
        if ids_a[k] != ids_b[k]:
            top2 = np.sort(log_a[k])[-2:]
            gap = float(top2[1] - top2[0])
            if gap < tie:
                return None
            return f"step {k}: token {ids_a[k]} vs {ids_b[k]} with a top-2 gap of {gap:.2e}"
    if len(ids_a) != len(ids_b):
        return f"lengths differ: {len(ids_a)} vs {len(ids_b)} tokens"
    return None
