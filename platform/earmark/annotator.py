"""THE Annotator: one callable class, loaded once, used by the batch job and by Serve.

Batch: Ray Data hands it a block of decoded files (one row per file, windows pickled in
`payload`); it flattens the windows of all files, buckets them by length so padding stays small,
runs every requested task on each bucket with one encoder pass (the backend's contract), and
merges the windows back into one output row per file. A window the model refuses or a bucket that
crashes costs only the files involved: they become `error` rows at stage `infer`.

Given an `output`, the batch job's Annotator also writes each block's rows as one shard before
the call returns (`earmark.batch.stages.write_rows`: deterministic name, atomic) and returns only
the summary columns, so finished rows never travel through the object store to a writer stage.
A block whose call did not return is retried by Ray Data on another actor and rewrites the same
shard name. Model calls hold a lock, so callers on several threads (Serve, a threaded actor) never
run two model calls at once on one device or thread pool.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from earmark.models.base import AudioModel, ModelInputError, Window
from earmark.models.registry import load_model
from earmark.schemas import ErrorKind, ErrorStage, ModelSpec, TaskRequest
from earmark.tasks import clean_text, join_window_texts, parse_tags

log = logging.getLogger(__name__)


@dataclass
class FileResult:
    fields: dict[str, Any]  # output-row fields (transcript, segments, caption, tags, ...)
    error: str | None = None
    infer_s: float = 0.0


def bucket_windows(windows: list[Window], batch_size: int) -> list[list[int]]:
    """Indices of windows grouped into batches of similar length (longest first)."""
    order = sorted(range(len(windows)), key=lambda i: -windows[i].num_samples)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_of(windows: list[Window], buckets: list[list[int]]) -> tuple[int, int]:
    """(real, padded) sample counts if each bucket is padded to its longest window."""
    real = sum(w.num_samples for w in windows)
    padded = sum(max(windows[i].num_samples for i in b) * len(b) for b in buckets if b)
    return real, padded


def merge_windows(
    windows: list[Window], texts: list[dict[str, str]], tasks: list[TaskRequest], family: str
) -> dict[str, Any]:
    """Row fields for one file from its windows' texts (windows in file order)."""
    order = sorted(range(len(windows)), key=lambda i: windows[i].index)
    ws = [windows[i] for i in order]
    ts = [texts[i] for i in order]
    out: dict[str, Any] = {}
    for task in tasks:
        parts = [clean_text(t.get(task.name, "")) for t in ts]
        if task.name == "asr":
            out["transcript"] = join_window_texts(parts)
            out["segments"] = [
                {"start_s": w.start_s, "end_s": w.end_s, "transcript": p}
                for w, p in zip(ws, parts, strict=True)
            ]
        elif task.name == "caption":
            out["caption"] = join_window_texts(parts)
        elif task.name == "tags":
            labels: list[str] = []
            for p in parts:
                labels += [lab for lab in parse_tags(p, family) if lab not in labels]
            out["tags"] = labels
            out["tags_raw"] = "\n".join(parts)
        else:
            out.setdefault("answers", []).append(
                {"name": task.name, "prompt": task.prompt, "text": join_window_texts(parts)}
            )
    return out


class Annotator:
    """Loads a model once in __init__; `__call__` annotates a Ray Data block of files."""

    def __init__(
        self,
        model: ModelSpec | dict,
        tasks: list[TaskRequest] | list[dict],
        output: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.spec = model if isinstance(model, ModelSpec) else ModelSpec.model_validate(model)
        self.tasks = [t if isinstance(t, TaskRequest) else TaskRequest(**t) for t in tasks]
        self.output = output  # batch job: write each block's rows as a shard (see module doc)
        self.storage_options = storage_options or {}
        self._model_lock = threading.Lock()  # one model call at a time, whatever the threads
        self.model: AudioModel = load_model(self.spec)
        self.model.check_tasks(self.tasks)
        self.family = self.model.info.name

    # -- windows → texts -------------------------------------------------------------------
    def annotate_windows(
        self, windows: list[Window], tasks: list[TaskRequest] | None = None
    ) -> tuple[list[dict[str, str] | None], list[str | None], tuple[int, int], float]:
        """Texts per window (None where the window failed), error per window, padding counts,
        and the seconds spent in the model (lock waits excluded)."""
        tasks = tasks or self.tasks
        texts: list[dict[str, str] | None] = [None] * len(windows)
        errors: list[str | None] = [None] * len(windows)
        good = []
        for i, w in enumerate(windows):
            try:
                self.model.check_window(w)
                good.append(i)
            except ModelInputError as exc:
                errors[i] = str(exc)
        sub = [windows[i] for i in good]
        buckets = bucket_windows(sub, self.spec.batch_size)
        model_s = 0.0
        for bucket in buckets:
            idx = [good[j] for j in bucket]
            with self._model_lock:
                t0 = time.perf_counter()
                try:
                    outs = self.model.annotate([windows[i] for i in idx], tasks)
                    for i, o in zip(idx, outs, strict=True):
                        texts[i] = o
                except Exception as exc:  # isolate the bad window: retry one by one
                    log.warning(
                        "batch of %d windows failed (%s); retrying one by one", len(idx), exc
                    )
                    for i in idx:
                        try:
                            texts[i] = self.model.annotate([windows[i]], tasks)[0]
                        except Exception as one_exc:
                            errors[i] = f"{type(one_exc).__name__}: {one_exc}"
                model_s += time.perf_counter() - t0
        return texts, errors, padding_of(sub, buckets), model_s

    # -- Ray Data batch method ---------------------------------------------------------------
    def __call__(self, batch: pa.Table) -> pa.Table:
        """Annotated rows of a block; with an `output`: its shard written, summary columns."""
        table = self.annotate_block(batch)
        if self.output is None:
            return table
        from earmark.batch.stages import write_rows

        return write_rows(table, self.output, self.storage_options)

    def annotate_block(self, batch: pa.Table) -> pa.Table:
        """Decoded rows (work schema) → the same rows annotated, payloads dropped."""
        rows = batch.to_pylist()
        todo = [r for r in rows if r.get("payload") is not None and r["status"] == "ok"]
        all_windows: list[Window] = []
        owner: list[int] = []
        for k, r in enumerate(todo):
            ws = pickle.loads(r["payload"])
            all_windows += ws
            owner += [k] * len(ws)
        texts, errors, (real, padded), elapsed = self.annotate_windows(all_windows)
        total_audio = sum(w.num_samples for w in all_windows) or 1
        for k, r in enumerate(todo):
            mine = [i for i, o in enumerate(owner) if o == k]
            audio = sum(all_windows[i].num_samples for i in mine)
            r["infer_s"] = elapsed * audio / total_audio  # share of the batch by audio length
            r["_pad_real"] = sum(all_windows[i].num_samples for i in mine)
            r["_pad_total"] = int(padded * audio / max(real, 1))
            bad = [errors[i] for i in mine if errors[i]]
            if bad:
                r.update(status="error", error_stage=str(ErrorStage.INFER))
                r["error_kind"] = str(ErrorKind.MODEL_ERROR)
                r["error"] = f"{len(bad)} of {len(mine)} window(s) failed: {bad[0]}"
            else:
                r.update(
                    merge_windows(
                        [all_windows[i] for i in mine],
                        [texts[i] for i in mine],
                        self.tasks,
                        self.family,
                    )
                )
        for r in rows:
            r["payload"] = None
            r["model"] = self.model.name
            r["model_revision"] = self.spec.revision
        return pa.Table.from_pylist(rows, schema=batch.schema)

    # -- Serve / local use -----------------------------------------------------------------
    def annotate_samples(
        self, audio_id: str, samples: np.ndarray, tasks: list[TaskRequest] | None = None
    ) -> dict[str, Any]:
        """Row fields for one decoded file (16 kHz mono float32); raises on model failure."""
        from earmark.audio.segment import make_windows

        tasks = tasks or self.tasks
        self.model.check_tasks(tasks)
        windows = make_windows(audio_id, samples, type(self.model))
        texts, errors, _, elapsed = self.annotate_windows(windows, tasks)
        bad = [e for e in errors if e]
        if bad:
            raise ModelInputError(bad[0])
        fields = merge_windows(windows, texts, tasks, self.family)  # type: ignore[arg-type]
        fields.update(
            infer_s=elapsed,
            num_windows=len(windows),
            model=self.model.name,
            model_revision=self.spec.revision,
        )
        return fields
