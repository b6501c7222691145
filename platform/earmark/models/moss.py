"""MOSS-Audio 4B/8B Instruct backend (family `moss`), batched, on earmark's own architecture.

CPU side (`prepare`): 128-bin Whisper log-mel (earmark.audio.features), no 30 s padding (T =
samples // 160). Model side (`annotate`): one encoder pass over the batch of windows, then one
greedy generation over all (window, task) rows, left-padded; each row gets its window's audio
embeddings (and DeepStack embeddings) packed by that window's own token count. Prompt layout,
special ids and time markers follow `OpenMOSS/MOSS-Audio` (`src/processing_moss_audio.py`). Time
markers (digits of the elapsed second after every 25 audio tokens) are on by default, as in the
reference inference scripts; `time_markers=False` or the checkpoint key `enable_time_marker: false`
turns them off. They change the model input only: outputs are returned as text, and
`parse_timed_segments` reads "[start - end] text" lines when a prompt asks for times.
torch/transformers are imported inside `__init__` only, so decode workers stay light.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from earmark.audio import features as F
from earmark.audio.features import N_MELS
from earmark.audio.windows import Window
from earmark.contracts import FAMILIES, TaskRequest
from earmark.models.base import (
    AudioModel,
    ModelInputError,
    attn_implementation,
    prefix_groups,
    torch_dtype,
)
from earmark.models.prompts import clean_text, prompt_for
from earmark.models.result import TaskText, mean_logprob

MIN_SAMPLES = F.N_FFT  # shorter windows are zero-padded to one STFT frame (2 mel frames, 1 token)
MARKER_EVERY_TOKENS = 25  # 2 s of audio at 12.5 tokens/s
MARKER_EVERY_S = 2
DEFAULT_TIME_MARKERS = True  # infer.py / app.py / hf_inference.py of the reference all enable them
MAX_BATCH_ROWS = 64  # (window, task) rows per generate call, bounds prefill memory


# -- features (CPU, numpy) ------------------------------------------------------------------------
def log_mel(samples: np.ndarray) -> np.ndarray:
    """[128, len//160] float32 Whisper log-mel of 16 kHz mono samples, without 30 s padding (the
    one implementation, earmark.audio.features); shorter windows zero-padded to one STFT frame."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size < MIN_SAMPLES:
        x = np.pad(x, (0, MIN_SAMPLES - x.size))
    return F.log_mel(x)


def audio_token_count(mel_frames: int) -> int:
    """Audio tokens for a log-mel of `mel_frames` frames: ceil-halved three times (3000 -> 375)."""
    n = int(mel_frames)
    for _ in range(3):
        n = (n - 1) // 2 + 1
    return n


def audio_placeholder_ids(
    n_tokens: int, audio_id: int, digit_ids: list[int] | None = None
) -> list[int]:
    """`audio_id` x n, with the digits of the elapsed second after every 25 tokens if digit_ids.

    A marker is written at every even second up to the clip's last whole second, so a clip of
    exactly 50 tokens (4 s) ends with the marker "4".
    """
    if not digit_ids:
        return [audio_id] * n_tokens
    ids: list[int] = []
    used = 0
    for second in range(MARKER_EVERY_S, int(n_tokens / 12.5) + 1, MARKER_EVERY_S):
        upto = (second // MARKER_EVERY_S) * MARKER_EVERY_TOKENS
        ids += [audio_id] * (upto - used)
        used = upto
        ids += [digit_ids[int(d)] for d in str(second)]
    return ids + [audio_id] * (n_tokens - used)


_SEGMENT = re.compile(
    r"^\s*\[?\s*(?P<a>\d+(?::\d+)*(?:\.\d+)?)\s*s?\s*(?:-|–|to|,)\s*"
    r"(?P<b>\d+(?::\d+)*(?:\.\d+)?)\s*s?\s*\]?\s*:?\s*(?P<text>.*)$"
)


def _seconds(stamp: str) -> float:
    total = 0.0
    for part in stamp.split(":"):
        total = total * 60 + float(part)
    return total


def parse_timed_segments(text: str) -> list[dict[str, Any]]:
    """Lines like "[0.00 - 2.50] text" or "00:01-00:03 text" -> [{start_s, end_s, transcript}].

    The released models' exact timestamp format is not documented; unmatched lines are skipped.
    """
    out = []
    for line in clean_text(text).splitlines():
        m = _SEGMENT.match(line)
        if m:
            out.append(
                {
                    "start_s": _seconds(m["a"]),
                    "end_s": _seconds(m["b"]),
                    "transcript": m["text"].strip(),
                }
            )
    return out


def row_texts(
    tokenizer: Any, tasks: list[TaskRequest], row: list[tuple[list[int], list[float], bool]]
) -> dict[str, TaskText | str]:
    """One window's generated (ids, log-probs, stopped) per task as texts: "[start - end] text"
    ASR lines become timed spans (both engines use this, so their rows agree)."""
    texts: dict[str, TaskText | str] = {}
    for t, task in enumerate(tasks):
        ids, lps, stopped = row[t]
        text = clean_text(tokenizer.decode(ids, skip_special_tokens=True))
        spans = None
        if task.name == "asr":  # "[0.00 - 2.50] words" lines: timed segments
            timed = parse_timed_segments(text)
            if timed and len(timed) == len([x for x in text.splitlines() if x.strip()]):
                spans = tuple((s["start_s"], s["end_s"], s["transcript"]) for s in timed)
                text = " ".join(s[2] for s in spans)
        texts[task.name] = TaskText(
            text=text, avg_logprob=mean_logprob(lps), truncated=not stopped, spans=spans
        )
    return texts


# -- backend ------------------------------------------------------------------------------------
class MossModel(AudioModel):
    info = FAMILIES["moss"]

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        time_markers: bool | None = None,
        max_batch_rows: int = MAX_BATCH_ROWS,
        **load: Any,
    ) -> None:
        super().__init__(checkpoint, **load)  # device, dtype, revision, max_new_tokens
        from earmark.models import moss_ckpt

        self.path = moss_ckpt.local_dir(self.checkpoint, self.revision)
        raw = moss_ckpt.check_files(self.path)
        self.model, self.tokenizer, self.ids = moss_ckpt.load(
            self.path,
            dtype=torch_dtype(self.dtype_name),
            device=self.device,
            attn=attn_implementation() if self.device.startswith("cuda") else "sdpa",
        )
        if time_markers is None:
            time_markers = bool(raw.get("enable_time_marker", DEFAULT_TIME_MARKERS))
        self.time_markers = time_markers
        self.max_batch_rows = max_batch_rows

    # -- CPU side -------------------------------------------------------------------------------
    @classmethod
    def prepare(cls, samples: np.ndarray) -> dict[str, np.ndarray]:
        return {"mel": log_mel(samples)}

    # -- model side -----------------------------------------------------------------------------
    def annotate(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> list[dict[str, TaskText | str]]:
        rows = self.annotate_rows(windows, tasks)
        return [row_texts(self.tokenizer, tasks, row) for row in rows]

    def annotate_ids(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> list[list[list[int]]]:
        """Generated token ids [window][task] (stop token excluded); the encoder runs once."""
        return [[ids for ids, _, _ in row] for row in self.annotate_rows(windows, tasks)]

    def annotate_rows(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> list[list[tuple[list[int], list[float], bool]]]:
        """Per [window][task]: generated ids (stop token excluded), the log-probability of each
        generated id (the stop token's included), and whether it stopped before the limit.
        The encoder runs once."""
        import torch

        if not windows:
            return []
        self.check_tasks(tasks)
        mels = [self._mel_of(w) for w in windows]
        frames = [m.shape[1] for m in mels]
        batch = np.zeros((len(mels), N_MELS, max(frames)), dtype=np.float32)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[1]] = m
        dev, dt = self.device, torch_dtype(self.dtype_name)
        with torch.inference_mode():  # ONE encoder pass for all windows and all tasks
            audio, deep, lens = self.model.encode_audio(
                torch.from_numpy(batch).to(dev, dt), torch.tensor(frames, device=dev)
            )
        self.stats.windows += len(windows)
        self.stats.encoder_passes += 1
        self.stats.real_units += sum(frames)
        self.stats.padded_units += batch.shape[0] * batch.shape[2]

        n_tok = [int(n) for n in lens.tolist()]
        halves = [self._prompt_halves(t) for t in tasks]
        out: list[list[Any]] = [[None for _ in tasks] for _ in windows]
        # tasks that agree before the audio share one prefill of it (and of DeepStack)
        for members, shared in prefix_groups(halves):
            head, tail = halves[members[0]]
            tails = [halves[t][1][shared:] for t in members]
            per_call = max(1, self.max_batch_rows // len(members))
            for start in range(0, len(windows), per_call):
                win = list(range(start, min(start + per_call, len(windows))))
                prefixes = [self._row_ids((head, tail[:shared]), n_tok[i]) for i in win]
                new = self._generate(prefixes, win, audio, deep, lens, tails)
                for k, ids in enumerate(new):
                    out[win[k // len(members)]][members[k % len(members)]] = ids
        return out

    def _mel_of(self, w: Window) -> np.ndarray:
        self.check_window(w)
        mel = w.features.get("mel")
        if mel is None or mel.ndim != 2 or mel.shape[0] != N_MELS or mel.shape[1] < 1:
            got = None if mel is None else tuple(mel.shape)
            raise ModelInputError(
                f"window {w.index} of {w.audio_id}: expected a [128, T] 'mel' feature from "
                f"MossModel.prepare, got {got}"
            )
        return mel

    def prompt_ids(self, task: TaskRequest, n_audio_tokens: int) -> list[int]:
        """Input ids of one (window, task) row in the reference chat layout
        (`processing_moss_audio.py`):
        [system] user: <|audio_bos|> <|AUDIO|> x n (+ time markers) <|audio_eos|> \n text."""
        return self._row_ids(self._prompt_halves(task), n_audio_tokens)

    def _row_ids(self, halves: tuple[list[int], list[int]], n_audio_tokens: int) -> list[int]:
        digits = self.ids["digits"] if self.time_markers else None
        span = audio_placeholder_ids(n_audio_tokens, self.ids["audio"], digits)
        return halves[0] + [self.ids["audio_start"], *span, self.ids["audio_end"]] + halves[1]

    @staticmethod
    def chat_halves(task: TaskRequest) -> tuple[str, str]:
        """The chat text before and after the audio span, in the reference layout (the same
        text vLLM's MOSS takes around its `<|audio_bos|><|AUDIO|><|audio_eos|>` placeholder)."""
        p = prompt_for("moss", task)
        head = f"<|im_start|>system\n{p.system}<|im_end|>\n" if p.system else ""
        head += "<|im_start|>user\n"
        tail = (f"\n{p.user}" if p.user else "") + "<|im_end|>\n<|im_start|>assistant\n"
        return head, tail

    def _prompt_halves(self, task: TaskRequest) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio span, in the reference chat layout."""
        head, tail = self.chat_halves(task)
        enc = self.tokenizer
        return enc.encode(head, add_special_tokens=False), enc.encode(
            tail, add_special_tokens=False
        )

    def _generate(
        self,
        seqs: list[list[int]],
        win: list[int],
        audio: Any,
        deep: list[Any],
        lens: Any,
        tails: list[list[int]],
    ) -> list[tuple[list[int], list[float], bool]]:
        """Greedy new ids per (window, tail) row, window-major (cut before the first stop id),
        with their log-probabilities (through the stop id) and whether a stop id was reached:
        the audio prefixes `seqs` are left-padded and prefilled together, then each continues
        with every tail."""
        import torch

        from earmark.models.hf_generate import left_pad
        from earmark.models.moss_arch import pack_rows

        dev, pad = self.device, self.ids["pad"]
        ids, mask = left_pad(seqs, pad, dev)
        tail_ids, tail_mask = left_pad(tails, pad, dev)
        rows = torch.tensor(win, device=dev)
        steps: list[Any] = []
        with torch.inference_mode():
            out = self.model.generate_greedy(
                ids,
                mask,
                audio_embeds=pack_rows(audio, lens, rows),  # each row: its window's own length
                deepstack_embeds=[pack_rows(d, lens, rows) for d in deep],
                audio_input_mask=(ids == self.ids["audio"]) & mask.bool(),
                max_new_tokens=self.max_new_tokens,
                stop_ids=self.ids["stop"],
                pad_id=pad,
                tail_ids=tail_ids.repeat(len(seqs), 1),
                tail_mask=tail_mask.repeat(len(seqs), 1),
                logprobs=steps,
            )
        lps = torch.stack(steps, 1).tolist() if steps else [[] for _ in range(out.shape[0])]
        result = []
        for row, lp in zip(out.tolist(), lps, strict=True):
            cut = next((k for k, t in enumerate(row) if t in self.ids["stop"]), None)
            end = len(row) if cut is None else cut
            result.append((row[:end], lp[: end + (cut is not None)], cut is not None))
        return result
