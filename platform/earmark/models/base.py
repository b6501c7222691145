"""The one interface every model family implements.

A backend is loaded once (weights onto a device and dtype), then asked to annotate batches of
windows. Feature preparation is a classmethod with no model state, so CPU decode workers can run
it and ship the (picklable, numpy) features to the GPU actor. Only backend modules import the
model libraries (torch, transformers, faster_whisper), and only inside functions or `__init__`.

Contract of `annotate`: every task requested for a window reuses ONE encoder pass over that
window ("encode once, ask many"); the result for window i is `results[i][task.name]`, a
`TaskText` (raw text, and the confidence, word times and language the decoder knows; see
`earmark.models.result`) or a plain string.
Parsing (tag splitting, think-block stripping) lives in `earmark.models.prompts`, not here.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from earmark.audio.samples import TARGET_SR
from earmark.audio.windows import Window
from earmark.contracts import FamilyInfo, TaskRequest
from earmark.models.result import TaskText


class ModelLoadError(Exception):
    """The checkpoint cannot be loaded (missing files, wrong family, no weights). Stops a job."""


class ModelInputError(ValueError):
    """A window the model cannot take (empty, too long, NaN). Becomes an `infer` error row."""


@dataclass
class BatchStats:
    """Per-call accounting the summary and benchmarks read."""

    windows: int = 0
    real_units: int = 0  # real (unpadded) frames/samples fed to the encoder
    padded_units: int = 0  # units in the padded batch tensors
    encoder_passes: int = 0

    @property
    def padding_fraction(self) -> float:
        return 0.0 if self.padded_units == 0 else 1.0 - self.real_units / self.padded_units


class AudioModel(abc.ABC):
    """Base class of every backend."""

    info: ClassVar[FamilyInfo]
    # whether `annotate` may be called from several threads at once (an engine that batches
    # concurrent calls itself); otherwise the Annotator makes calls one at a time
    concurrent_calls: ClassVar[bool] = False

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        max_new_tokens: int = 256,
    ) -> None:
        self.checkpoint = checkpoint or self.info.default_checkpoint
        self.revision = revision
        self.max_new_tokens = max_new_tokens
        self.device, self.dtype_name = resolve_device_dtype(device, dtype)
        self.stats = BatchStats()

    # files a local checkpoint directory must hold (checked before a job starts)
    required_files: ClassVar[tuple[str, ...]] = ("config.json",)

    @classmethod
    def preflight(cls, checkpoint: str) -> None:
        """Cheap check that a checkpoint can be loaded, without reading weights.

        Raises ModelLoadError naming the cause and the fix.
        """
        p = Path(checkpoint).expanduser()
        if p.is_dir():
            missing = [f for f in cls.required_files if not (p / f).exists()]
            if missing:
                raise ModelLoadError(
                    f"checkpoint directory {p} lacks {', '.join(missing)}: "
                    f"is it a complete {cls.info.name} checkpoint?"
                )
            return
        if p.exists():
            raise ModelLoadError(f"checkpoint {p} is a file; a checkpoint is a directory")
        if checkpoint.startswith(("/", ".", "~")) or checkpoint.count("/") != 1:
            raise ModelLoadError(f"checkpoint directory {checkpoint} does not exist")
        if hub_offline():
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(checkpoint, "config.json"), str):
                raise ModelLoadError(
                    f"{checkpoint} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1: "
                    f"download it first (hf download {checkpoint}) or pass a local directory"
                )

    # -- CPU side ---------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        """Features for one window of 16 kHz mono float32 samples (pure, picklable numpy)."""

    # -- model side -------------------------------------------------------------------------
    @abc.abstractmethod
    def annotate(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> list[dict[str, TaskText | str]]:
        """Output per task for each window, in input order. One encoder pass per window."""

    @property
    def name(self) -> str:
        return f"{self.info.name}:{self.checkpoint}"

    def check_tasks(self, tasks: list[TaskRequest]) -> None:
        for t in tasks:
            ok = ("custom" in self.info.tasks) if t.is_custom else (t.name in self.info.tasks)
            if not ok:
                raise ValueError(
                    f"model family {self.info.name!r} cannot do task {t.name!r}; "
                    f"it supports {', '.join(self.info.tasks)}"
                )

    @classmethod
    def window_samples(cls, samples: np.ndarray) -> np.ndarray:
        """One window's samples as float32, refused (ModelInputError naming the family) when
        they are not mono, empty, not finite, or longer than the family's window."""
        name = cls.info.name
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1 or samples.size == 0:
            raise ModelInputError(f"{name} needs non-empty mono samples, got shape {samples.shape}")
        if not np.all(np.isfinite(samples)):
            raise ModelInputError(f"{name} window samples hold NaN or inf")
        if samples.size > cls.info.window_s * TARGET_SR:
            raise ModelInputError(
                f"{name} window of {samples.size / TARGET_SR:.1f} s is longer than "
                f"{cls.info.window_s:.0f} s"
            )
        return samples

    def check_window(self, w: Window) -> None:
        """Refuse windows the model cannot take, naming the problem."""
        if w.num_samples <= 0:
            raise ModelInputError(f"window {w.index} of {w.audio_id} is empty (0 samples)")
        if w.duration_s > self.info.window_s + 1e-6:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id} is {w.duration_s:.1f} s, longer than the "
                f"{self.info.window_s:.0f} s a {self.info.name} window may hold"
            )
        for k, v in w.features.items():
            if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
                raise ModelInputError(
                    f"window {w.index} of {w.audio_id}: feature {k!r} holds NaN or inf"
                )


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as the Hugging Face hub reads it (1/true/yes/on): the one place here."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """CUDA bf16 when available, CPU float32 otherwise (explicit choices win)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for but no CUDA GPU is visible")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return device, dtype


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def attn_implementation() -> str:
    """flash_attention_2 when installed, else SDPA (never the slow eager path by default)."""
    try:
        import flash_attn  # noqa: F401

        return "flash_attention_2"
    except ImportError:
        return "sdpa"


def prefix_groups(halves: list[tuple[list[int], list[int]]]) -> list[tuple[list[int], int]]:
    """Tasks whose prompts can share one prefill of the audio ("encode once, ask many").

    `halves[t]` are task t's prompt ids before and after the audio placeholder. Tasks with the
    same ids before the audio form a group: the audio prefix (before + audio tokens + the
    tokens all their tails start with) is prefilled once per window and its KV cache reused by
    every task of the group. Returns (task indices, shared tail length); the shared tail stops
    one token short of every tail, so each task still has a token to continue from.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for t, (before, _) in enumerate(halves):
        groups.setdefault(tuple(before), []).append(t)
    out = []
    for members in groups.values():
        tails = [halves[t][1] for t in members]
        n = 0
        while all(n < len(x) - 1 for x in tails) and len({x[n] for x in tails}) == 1:
            n += 1
        out.append((members, n))
    return out
