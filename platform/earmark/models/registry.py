"""Families → backend classes. Nothing here imports a model library until a class is asked for."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from earmark.contracts.families import FAMILIES, plugin_info

if TYPE_CHECKING:
    from earmark.contracts import ModelSpec
    from earmark.models.base import AudioModel


def model_class(name: str, engine: str = "hf") -> type[AudioModel]:
    """The backend class of a built-in family on an engine (hf: earmark's transformers code;
    vllm: `earmark.models.vllm_models`), or of a user's `package.module.Class`."""
    if engine != "hf":
        info = FAMILIES.get(name)
        if info is None or engine not in info.engines:
            raise ValueError(f"model family {name!r} has no {engine!r} engine")
        return getattr(importlib.import_module("earmark.models.vllm_models"), info.vllm_cls)
    if name in FAMILIES:
        module, cls = FAMILIES[name].module, FAMILIES[name].cls
    else:
        plugin_info(name)  # checks it is an AudioModel, with a message naming the problem
        module, _, cls = name.rpartition(".")
    return getattr(importlib.import_module(module), cls)


def model_class_options(cls: type[AudioModel]) -> tuple[str, ...]:
    """The family options (ModelSpec fields) this backend's constructor takes."""
    return tuple(getattr(cls.info, "options", ()))


def load_model(spec: ModelSpec) -> AudioModel:
    """Load the backend a ModelSpec names (weights are read here, once)."""
    cls = model_class(spec.family, spec.engine)
    extra = {}
    if spec.family == "whisper":
        extra = {"pack_windows": spec.pack_windows, "word_timestamps": spec.word_timestamps}
    extra |= {k: getattr(spec, k) for k in model_class_options(cls)}
    return cls(
        spec.checkpoint,
        device=spec.device,
        dtype=spec.dtype,
        revision=spec.revision,
        max_new_tokens=spec.max_new_tokens,
        **extra,
    )
