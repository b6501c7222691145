"""MiDashengLM and MOSS-Audio on vLLM (`model.engine: vllm`), behind the same AudioModel
interface as the transformers backends.

The Annotator, the merge, the flags and the rows are the same for both engines; what changes is
who runs the model. Here earmark keeps the tokenizer (to build the same chat text and to decode
the generated ids with the same rules as the transformers path) and hands vLLM, in one call,
every (window, task) prompt: the chat text with one `<|audio_bos|><|AUDIO|><|audio_eos|>`
placeholder and the window's 16 kHz samples. vLLM expands the placeholder to the window's audio
tokens itself, encodes each distinct audio once (its multimodal encoder cache is keyed by the
audio's hash), shares equal prompt prefixes through prefix caching, and schedules all rows of
all concurrent calls together (continuous batching).

Batch invariance: vLLM alone agrees with earmark (tests/unit/test_*_vllm_parity.py), but both
families' audio encoders pad a clip to its batch neighbours, which changes some clips (see
`batch_safe`). So windows are given to the engine in encoder groups (`encoder_groups`): the
windows that are safe together, and every other window alone; the rows then equal the
transformers path batched and alone (tests/unit/test_vllm_engine.py). The row's `model` names
the engine, its version and whether a row can depend on its batch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from earmark.audio import features as F
from earmark.audio.samples import TARGET_SR
from earmark.audio.windows import Window
from earmark.contracts import FAMILIES, TaskRequest
from earmark.models import hf_generate as G
from earmark.models.base import AudioModel, ModelInputError, ModelLoadError
from earmark.models.prompts import prompt_for
from earmark.models.result import TaskText
from earmark.models.vllm_engine import VllmProcess, vllm_python

PLACEHOLDER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
CONTEXT_TOKENS = 1024  # prompt budget besides max_new_tokens: 30 s is ≤ 390 audio tokens + text
# MOSS: 4-s chunks of 400 mel frames (hop 160 samples), with two frames of margin
MOSS_FULL_CHUNK_SAMPLES = (400 + 2) * 160
# MiDashengLM front end (the release config): 512-sample window, 160-sample hop; a patch spans
# 4 frames, a token 5 patches
DASHENG_WIN, DASHENG_HOP = 512, 160
DASHENG_FRAMES_PER_PATCH, DASHENG_PATCHES_PER_TOKEN = 4, 5
CPU_MAX_SEQS = 32  # rows decoded together on CPU (the KV cache is 1 GiB there)
GPU_MAX_SEQS = 256  # on a GPU: the engine's default order of magnitude


def user_options() -> dict[str, Any]:
    """`vllm.LLM` arguments from EARMARK_VLLM_OPTIONS (a JSON object), or ModelLoadError."""
    text = os.environ.get("EARMARK_VLLM_OPTIONS", "").strip()
    if not text:
        return {}
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"EARMARK_VLLM_OPTIONS is not JSON ({exc}): {text!r}") from None
    if not isinstance(given, dict):
        raise ModelLoadError(f"EARMARK_VLLM_OPTIONS must be a JSON object, got {text!r}")
    return given


class VllmModel(AudioModel):
    """Base of the vLLM backends: one engine process per model, loaded once."""

    concurrent_calls: ClassVar[bool] = True  # the engine process batches concurrent calls

    def __init__(self, checkpoint: str | None = None, **load: Any) -> None:
        super().__init__(checkpoint, **load)  # device, dtype, revision, max_new_tokens
        # EARMARK_VLLM_BATCH_AUDIO=1: let vLLM batch windows through the encoder even where
        # that makes a row depend on its neighbours (faster prefill on a GPU)
        forced = os.environ.get("EARMARK_VLLM_BATCH_AUDIO", "").strip() in ("1", "true", "yes")
        self.batch_audio = forced
        self.path = self._local_dir()
        self._load_tokenizer()  # earmark's side: prompts in, ids out
        self._texts: dict[TaskRequest, str] = {}
        self.proc = VllmProcess(self.engine_options())
        self.version = self.proc.info.get("vllm", "?")
        self.sampling = {
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
            "logprobs": 0,  # the picked token's log-probability only
            "stop_token_ids": list(self.stop_ids),
            "detokenize": False,  # earmark decodes, with the transformers path's rules
            "seed": 0,
        }
        self.prompt_tokens = 0  # accounting: prompt tokens sent, and of those served from cache
        self.cached_tokens = 0

    @classmethod
    def preflight(cls, checkpoint: str) -> None:
        super().preflight(checkpoint)
        vllm_python()  # names how to get vLLM when it is missing
        user_options()

    @classmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        """{"input_values": the window's 16 kHz samples}: vLLM computes the features."""
        return {"input_values": cls.pad(cls.window_samples(samples))}

    @classmethod
    def pad(cls, samples: np.ndarray) -> np.ndarray:
        """Short windows padded as the family's transformers path pads them."""
        return samples

    @property
    def name(self) -> str:
        """family:checkpoint, the engine, and whether a row can depend on its batch."""
        invariant = "batch-variant audio encoder" if self.batch_audio else "batch-invariant"
        return f"{self.info.name}:{self.checkpoint} (vllm {self.version}, {invariant})"

    def engine_options(self) -> dict[str, Any]:
        """`vllm.LLM` arguments; `EARMARK_VLLM_OPTIONS` (JSON) adds to or overrides them."""
        cpu = self.device == "cpu"
        options = {
            "model": str(self.path),
            "trust_remote_code": True,
            "dtype": self.dtype_name,
            "seed": 0,
            "max_model_len": CONTEXT_TOKENS + self.max_new_tokens,
            "max_num_seqs": CPU_MAX_SEQS if cpu else GPU_MAX_SEQS,
            "limit_mm_per_prompt": {"audio": 1},
            "enable_prefix_caching": True,
            "enforce_eager": cpu,  # no graph capture on CPU: it only slows the start
            "earmark_encoder_groups": not self.batch_audio,
        }
        return options | user_options()

    def annotate(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> list[dict[str, TaskText | str]]:
        """All (window, task) prompts in ONE engine call: vLLM encodes each window once."""
        if not windows:
            return []
        self.check_tasks(tasks)
        waves = [self._input(w) for w in windows]
        prompts = [(self._text(t), i) for i in range(len(waves)) for t in tasks]
        rows = self.proc.generate(waves, prompts, self.sampling, self.encoder_groups(waves))
        self.stats.windows += len(windows)
        self.stats.real_units += sum(len(w) for w in waves)
        self.stats.padded_units += sum(len(w) for w in waves)  # no padding: paged, per row
        self.stats.encoder_passes = self.proc.counts.get("encoder_items", 0)
        self.prompt_tokens += sum(r.prompt_tokens for r in rows)
        self.cached_tokens += sum(r.cached_tokens for r in rows)
        out = []
        for i in range(len(windows)):
            mine = rows[i * len(tasks) : (i + 1) * len(tasks)]
            out.append(self.texts(tasks, mine))
        return out

    def encoder_groups(self, waves: list[np.ndarray]) -> list[int]:
        """Per window, its encoder group: windows vLLM encodes the same batched as alone
        (`batch_safe`) share group 0 and may be encoded together; every other window is
        encoded alone. With EARMARK_VLLM_BATCH_AUDIO all share one group."""
        if self.batch_audio:
            return [0] * len(waves)
        full = int(self.info.window_s * TARGET_SR)  # no neighbour is longer: never padded
        safe = [self.batch_safe(len(w)) or len(w) >= full for w in waves]
        return [0 if ok else i + 1 for i, ok in enumerate(safe)]

    @classmethod
    def batch_safe(cls, samples: int) -> bool:
        """Whether vLLM encodes a window of `samples` (as sent) the same in any batch."""
        return False

    def _input(self, w: Window) -> np.ndarray:
        self.check_window(w)
        wave = w.features.get("input_values")
        if wave is None or wave.ndim != 1 or wave.size == 0:
            got = None if wave is None else tuple(wave.shape)
            raise ModelInputError(
                f"window {w.index} of {w.audio_id}: expected 16 kHz samples 'input_values' "
                f"from {type(self).__name__}.prepare, got {got}"
            )
        return wave

    def _text(self, task: TaskRequest) -> str:
        if task not in self._texts:
            self._texts[task] = self.prompt_text(task)
        return self._texts[task]

    def close(self) -> None:
        self.proc.close()

    # -- per family -----------------------------------------------------------------------------
    stop_ids: list[int]

    def _local_dir(self) -> Path:
        raise NotImplementedError

    def _load_tokenizer(self) -> None:
        raise NotImplementedError

    def prompt_text(self, task: TaskRequest) -> str:
        """The chat text of a task with one audio placeholder, as the transformers path has it."""
        raise NotImplementedError

    def texts(self, tasks: list[TaskRequest], rows: list[Any]) -> dict[str, TaskText | str]:
        raise NotImplementedError


class VllmMossModel(VllmModel):
    info = FAMILIES["moss"]

    def _local_dir(self) -> Path:
        from earmark.models import moss_ckpt

        path = moss_ckpt.local_dir(self.checkpoint, self.revision)
        moss_ckpt.check_files(path)
        return path

    def _load_tokenizer(self) -> None:
        from earmark.models import moss_ckpt

        self.tokenizer, self.ids = moss_ckpt.tokenizer_ids(self.path)
        self.stop_ids = self.ids["stop"]

    @classmethod
    def batch_safe(cls, samples: int) -> bool:
        """A window of at least one full 4-s chunk: its chunks are padded to 400 mel frames
        alone as in any batch (a shorter clip is padded to its batch's widest chunk)."""
        return samples >= MOSS_FULL_CHUNK_SAMPLES

    @classmethod
    def pad(cls, samples: np.ndarray) -> np.ndarray:
        from earmark.models.moss import MIN_SAMPLES

        return np.pad(samples, (0, max(0, MIN_SAMPLES - samples.size)))

    def prompt_text(self, task: TaskRequest) -> str:
        from earmark.models.moss import MossModel

        head, tail = MossModel.chat_halves(task)
        return head + PLACEHOLDER + tail

    def texts(self, tasks: list[TaskRequest], rows: list[Any]) -> dict[str, TaskText | str]:
        from earmark.models.moss import row_texts

        cut = [(r.ids[:-1] if r.stopped else r.ids, r.logprobs, r.stopped) for r in rows]
        return row_texts(self.tokenizer, tasks, cut)


class VllmMiDashengLMModel(VllmModel):
    info = FAMILIES["midashenglm"]
    stop_tokens = ("<|im_end|>", "<|endoftext|>")  # as the transformers path stops

    def _local_dir(self) -> Path:
        from earmark.models import hf_common as H

        local, self.checkpoint = H.validate_checkpoint(self.checkpoint, "midashenglm", None)
        if local:
            return Path(self.checkpoint)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self.checkpoint, revision=self.revision))

    def _load_tokenizer(self) -> None:
        from earmark.models import hf_common as H
        from earmark.models.midashenglm import AUDIO_TOKEN

        path = str(self.path)
        self.tokenizer = H.load_tokenizer(path, "midashenglm", None, True)
        self.chat_template = H.load_chat_template(self.tokenizer, path, None, True)
        self.stop_ids = [H.token_id(self.tokenizer, self.stop_tokens[0], path)]
        extra = self.tokenizer.convert_tokens_to_ids(self.stop_tokens[1])
        if extra not in (None, self.tokenizer.unk_token_id):
            self.stop_ids.append(int(extra))
        H.token_id(self.tokenizer, AUDIO_TOKEN, path)

    @classmethod
    def batch_safe(cls, samples: int) -> bool:
        """Whether every mel frame a kept patch or token reads ends inside the window: vLLM's
        front end runs on the zero-padded batch, so a frame reaching past the end reads zeros
        there and the reflected signal alone (the real model's code does the same)."""
        valid_patches = samples // (DASHENG_FRAMES_PER_PATCH * DASHENG_HOP)
        read_patches = DASHENG_PATCHES_PER_TOKEN * F.dasheng_num_tokens(samples)
        last_frame = DASHENG_FRAMES_PER_PATCH * max(valid_patches, read_patches) - 1
        return last_frame * DASHENG_HOP + DASHENG_WIN // 2 <= samples

    @classmethod
    def pad(cls, samples: np.ndarray) -> np.ndarray:
        return F.pad_to_min_length(samples)

    def prompt_text(self, task: TaskRequest) -> str:
        from earmark.models.midashenglm import AUDIO_TOKEN, render_prompt
        from earmark.models.remote_code import apply_template

        def template(messages: list[dict[str, Any]]) -> str | None:
            return apply_template(self.tokenizer, self.chat_template, messages, AUDIO_TOKEN, "")

        return render_prompt(prompt_for(self.info.name, task), template)

    def texts(self, tasks: list[TaskRequest], rows: list[Any]) -> dict[str, TaskText | str]:
        out: dict[str, TaskText | str] = {}
        for task, r in zip(tasks, rows, strict=True):
            trace = G.Trace(r.ids, None, r.logprobs, r.ids[-1] if r.stopped else None)
            out[task.name] = G.task_text(self.tokenizer, trace, self.stop_ids)
        return out
