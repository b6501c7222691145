"""The model families as data: what each can do, known without importing a model library.

`earmark models list` prints this table; `earmark.models.registry` turns a family into its
backend class. A family may also be a user's own `AudioModel` subclass named by import path
(`package.module.Class`): its class attribute `info` is its entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyInfo:
    """What `earmark models list` shows; known without loading anything."""

    name: str
    default_checkpoint: str
    window_s: float  # longest window one model call takes, seconds
    audio_tokens_per_s: float | None  # None: not an LLM (e.g. Whisper)
    tasks: tuple[str, ...]  # built-in tasks supported; "custom" when free prompts work
    module: str  # import path of the backend module (imported lazily)
    cls: str  # backend class name in that module
    description: str = ""
    options: tuple[str, ...] = ()  # family options of ModelSpec it takes (e.g. "language")
    engines: tuple[str, ...] = ("hf",)  # ModelSpec.engine values it runs on; hf: its own code
    vllm_cls: str = ""  # the backend class of engine vllm, in earmark.models.vllm_models


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
        engines=("hf", "vllm"),
        vllm_cls="VllmMiDashengLMModel",
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
        engines=("hf", "vllm"),
        vllm_cls="VllmMossModel",
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
        options=("language",),
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
    return plugin_info(name)


def plugin_info(path: str) -> FamilyInfo:
    """The `info` of a user's own model class, `package.module.Class` (imported here)."""
    module, _, cls_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model family {path!r} cannot be imported: {exc}") from None
    info = getattr(cls, "info", None)
    if not (isinstance(cls, type) and isinstance(info, FamilyInfo)):
        raise ValueError(f"model family {path!r} is not an AudioModel subclass")
    return info
