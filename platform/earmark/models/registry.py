"""The explicit registry of model families. Nothing here imports a model library."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from earmark.models.base import FamilyInfo

if TYPE_CHECKING:
    from earmark.models.base import AudioModel
    from earmark.schemas import ModelSpec

FAMILIES: dict[str, FamilyInfo] = {
    "eureka": FamilyInfo(
        name="eureka",
        default_checkpoint="cslys1999/Eureka-Audio-Instruct",
        window_s=30.0,
        audio_tokens_per_s=12.5,
        tasks=("asr", "caption", "tags", "custom"),
        module="earmark.models.eureka",
        cls="EurekaModel",
        description="Eureka-Audio-Instruct (Whisper encoder + MoE adapter + Qwen3-1.7B)",
    ),
    "midashenglm": FamilyInfo(
        name="midashenglm",
        default_checkpoint="mispeech/midashenglm-7b-1021-bf16",
        window_s=30.0,
        audio_tokens_per_s=5.0,
        tasks=("asr", "caption", "tags", "custom"),
        module="earmark.models.midashenglm",
        cls="MiDashengLMModel",
        description="MiDashengLM-7B (Dasheng encoder + Qwen2.5-Omni-7B thinker)",
    ),
    "moss": FamilyInfo(
        name="moss",
        default_checkpoint="OpenMOSS-Team/MOSS-Audio-4B-Instruct",
        window_s=30.0,
        audio_tokens_per_s=12.5,
        tasks=("asr", "caption", "tags", "custom"),
        module="earmark.models.moss",
        cls="MossModel",
        description="MOSS-Audio 4B/8B Instruct (earmark's own implementation, DeepStack)",
    ),
    "whisper": FamilyInfo(
        name="whisper",
        default_checkpoint="tiny.en",
        window_s=30.0,
        audio_tokens_per_s=None,
        tasks=("asr",),
        module="earmark.models.whisper",
        cls="WhisperModel",
        description="Whisper on CTranslate2 via faster-whisper (ASR only)",
    ),
}


def family(name: str) -> FamilyInfo:
    """A built-in family, or `package.module.Class`: the import path of a user's own
    AudioModel subclass (its `info` says what it can do). Importing it must be cheap."""
    if name in FAMILIES:
        return FAMILIES[name]
    if "." not in name:
        raise ValueError(
            f"unknown model family {name!r}; known: {', '.join(FAMILIES)} "
            "(or the import path of an AudioModel subclass, package.module.Class)"
        )
    return _plugin_class(name).info


def _plugin_class(path: str) -> type[AudioModel]:
    from earmark.models.base import AudioModel

    module, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model family {path!r} cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, AudioModel)):
        raise ValueError(f"model family {path!r} is not an AudioModel subclass")
    return cls


def model_class(name: str) -> type[AudioModel]:
    if name not in FAMILIES:
        return _plugin_class(name)
    info = FAMILIES[name]
    return getattr(importlib.import_module(info.module), info.cls)


def load_model(spec: ModelSpec) -> AudioModel:
    """Load the backend a ModelSpec names (weights are read here, once)."""
    cls = model_class(spec.family)
    extra = {"pack_windows": spec.pack_windows} if spec.family == "whisper" else {}
    return cls(
        spec.checkpoint,
        device=spec.device,
        dtype=spec.dtype,
        revision=spec.revision,
        max_new_tokens=spec.max_new_tokens,
        **extra,
    )
