"""THE Annotator: one callable class, loaded once, used by the batch job and by Serve.

Batch: Ray Data hands it a block of decoded files (one row per file, windows pickled in
`payload`); it flattens the windows of all files, buckets them by length so padding stays small,
runs every requested task on each bucket with one encoder pass (the backend's contract), and
merges the windows back into one output row per file. A window the model refuses costs only its
file (an `infer/model_error` row); a failure of the model or its device is never a row: the
failure policy (`earmark.annotate.failures`) decides, and the batch job's `AttemptLedger`
narrows a batch that keeps crashing down to the one file to blame.

Given an `output`, the batch job's Annotator also writes each block's rows as one shard before
the call returns (`earmark.sink.shards.write_rows`: deterministic name, atomic) and returns only
the summary columns, so finished rows never travel through the object store to a writer stage.
A block whose call did not return is retried by Ray Data on another actor and rewrites the same
shard name. Model calls hold a lock, so callers on several threads (Serve, a threaded actor) never
run two model calls at once on one device or thread pool.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from earmark.annotate.failures import (
    FailureKind,
    FatalModelError,
    JobStopped,
    classify,
    describe,
    release_memory,
)
from earmark.annotate.failures import actor_id as _actor_id
from earmark.annotate.failures import exit_for_restart as _exit_for_restart
from earmark.annotate.merge import bucket_windows, merge_windows, padding_of
from earmark.audio.windows import Window
from earmark.contracts import ErrorKind, ErrorStage, ModelSpec, TaskRequest
from earmark.models.base import AudioModel, ModelInputError
from earmark.models.registry import load_model
from earmark.models.result import TaskText
from earmark.storage import Location, LocationLike

log = logging.getLogger(__name__)
# the asr output of a window the speech gate kept from the model
NO_SPEECH = TaskText(text="", flags=("no_speech",))


@dataclass
class FileOutcome:
    """What the model made of one file: merged row fields, or the error of a window."""

    fields: dict[str, Any] | None = None
    error: str | None = None
    infer_s: float = 0.0  # the file's share of the model calls' time, by audio length
    pad_real: int = 0  # its samples, and its share of the padded batch samples
    pad_total: int = 0


class Ledger(Protocol):
    """What the Annotator asks of the job's attempt ledger (`failures.AttemptLedger`,
    reached through a Ray actor in the batch job)."""

    def actor_started(self, actor_id: str) -> None: ...
    def attempts(self, audio_ids: list[str]) -> dict[str, int]: ...
    def may_quarantine(self, audio_id: str) -> str | None: ...
    def begin(self, audio_ids: list[str]) -> int: ...
    def succeed(self, token: int) -> None: ...
    def fail(self, token: int, error: str) -> str: ...


class Annotator:
    """Loads a model once in __init__; `__call__` annotates a Ray Data block of files."""

    def __init__(
        self,
        model: ModelSpec | dict,
        tasks: list[TaskRequest] | list[dict],
        output: LocationLike | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.spec = model if isinstance(model, ModelSpec) else ModelSpec.model_validate(model)
        self.tasks = [t if isinstance(t, TaskRequest) else TaskRequest(**t) for t in tasks]
        # batch job: write each block's rows as a shard (see module doc)
        self.output = None if output is None else Location.of(output)
        self.ledger = ledger  # batch job: attempts per file across restarts (see failures.py)
        self.model: AudioModel = load_model(self.spec)
        # one model call at a time, whatever the threads; re-entrant because a batch job
        # holds it across a whole group of files (see _annotate_group). An engine that
        # schedules concurrent calls itself (vLLM) takes them all at once.
        concurrent = getattr(self.model, "concurrent_calls", False)
        self._model_lock = contextlib.nullcontext() if concurrent else threading.RLock()
        self.model.check_tasks(self.tasks)
        self.family = self.model.info.name
        if self.ledger is not None:
            self.ledger.actor_started(_actor_id())

    # -- windows → texts -------------------------------------------------------------------
    def annotate_windows(
        self, windows: list[Window], tasks: list[TaskRequest] | None = None
    ) -> tuple[list[dict[str, Any] | None], list[str | None], tuple[int, int], float]:
        """Texts per window (None where the window failed), error per window, padding counts,
        and the seconds spent in the model (lock waits excluded).

        Raises FatalModelError when the model, not a window, failed (see annotate.failures)."""
        tasks = tasks or self.tasks
        texts: list[dict[str, Any] | None] = [None] * len(windows)
        errors: list[str | None] = [None] * len(windows)
        good = []
        for i, w in enumerate(windows):
            try:
                self.model.check_window(w)
                good.append(i)
            except ModelInputError as exc:
                errors[i] = str(exc)
        sub = [windows[i] for i in good]
        paged = getattr(self.model, "concurrent_calls", False)
        # an engine that schedules rows itself (vLLM) gets every window in one call: it pages
        # its KV cache per row, so there is no padding to bucket against and no batch to fill
        buckets = [list(range(len(sub)))] if paged else bucket_windows(sub, self.spec.batch_size)
        model_s = 0.0
        for bucket in buckets:
            with self._model_lock:
                t0 = time.perf_counter()
                self._run_bucket([good[j] for j in bucket], windows, tasks, texts, errors)
                model_s += time.perf_counter() - t0
        real = sum(w.num_samples for w in sub)
        return texts, errors, (real, real) if paged else padding_of(sub, buckets), model_s

    def annotate_gated(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> tuple[list[dict[str, Any] | None], list[str | None], tuple[int, int], float, list[bool]]:
        """annotate_windows, with the speech gate: a window with less speech than
        `min_speech_s` is not sent for asr (an empty, no_speech transcript); its other tasks
        still run. A file of pure noise asked only for asr costs no model time. The last value
        says which windows went to the model."""
        gate = self.spec.min_speech_s if any(t.name == "asr" for t in tasks) else 0.0
        quiet = {
            i
            for i, w in enumerate(windows)
            if gate > 0 and w.speech_s is not None and w.speech_s < gate
        }
        if not quiet:
            return (*self.annotate_windows(windows, tasks), [True] * len(windows))
        texts: list[dict[str, Any] | None] = [None] * len(windows)
        errors: list[str | None] = [None] * len(windows)
        real = padded = 0
        elapsed = 0.0
        rest = [t for t in tasks if t.name != "asr"]
        for idx, todo in (
            ([i for i in range(len(windows)) if i not in quiet], tasks),
            (sorted(quiet), rest),
        ):
            if not idx or not todo:
                continue
            t, e, (r, p), s = self.annotate_windows([windows[i] for i in idx], todo)
            for k, i in enumerate(idx):
                texts[i], errors[i] = t[k], e[k]
            real, padded, elapsed = real + r, padded + p, elapsed + s
        for i in quiet:
            if errors[i] is None:
                texts[i] = {**(texts[i] or {}), "asr": NO_SPEECH}
        sent = [i not in quiet or bool(rest) for i in range(len(windows))]
        return texts, errors, (real, padded), elapsed, sent

    def _run_bucket(
        self,
        idx: list[int],
        windows: list[Window],
        tasks: list[TaskRequest],
        texts: list[dict[str, Any] | None],
        errors: list[str | None],
    ) -> None:
        """One model call; a refused window or an out-of-memory batch is split in halves
        until the window to blame is alone. Anything else is the model's failure."""
        try:
            outs = self.model.annotate([windows[i] for i in idx], tasks)
        except Exception as exc:
            kind = classify(exc)
            if kind is FailureKind.INPUT and len(idx) == 1:
                errors[idx[0]] = describe(exc)
                return
            if kind is FailureKind.FATAL or len(idx) == 1:  # OOM on one window is fatal too
                raise FatalModelError(describe(exc)) from exc
            log.warning("batch of %d windows failed (%s); splitting it", len(idx), describe(exc))
            if kind is FailureKind.OUT_OF_MEMORY:
                release_memory()
            half = len(idx) // 2
            self._run_bucket(idx[:half], windows, tasks, texts, errors)
            self._run_bucket(idx[half:], windows, tasks, texts, errors)
            return
        for i, o in zip(idx, outs, strict=True):
            texts[i] = o

    # -- Ray Data batch method ---------------------------------------------------------------
    def __call__(self, batch: pa.Table) -> pa.Table:
        """Annotated rows of a block; with an `output`: its shard written, summary columns."""
        table = self.annotate_block(batch)
        if self.output is None:
            return table
        from earmark.sink.shards import write_rows

        return write_rows(table, self.output)

    def annotate_block(self, batch: pa.Table) -> pa.Table:
        """Decoded rows (work schema) → the same rows annotated, payloads dropped."""
        rows = batch.to_pylist()
        todo = [r for r in rows if r.get("payload") is not None and r["status"] == "ok"]
        for group in self._plan(todo):
            self._annotate_group(group)
        for r in rows:
            r["payload"] = None
            r.update(self.model_fields())
        return pa.Table.from_pylist(rows, schema=batch.schema)

    def _plan(self, todo: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """The block as one group; one file per group (least tried first) when some of its
        files failed fatally before, so the file to blame is found and the others pass."""
        if not todo:
            return []
        tried = self.ledger.attempts([r["audio_id"] for r in todo]) if self.ledger else {}
        if not tried:
            return [todo]
        log.warning("a block with %d earlier fatal attempts: one file at a time", len(tried))
        return [[r] for r in sorted(todo, key=lambda r: tried.get(r["audio_id"], 0))]

    def _annotate_group(self, group: list[dict[str, Any]]) -> None:
        if self.ledger is None:
            self._annotate_files(group)
            return
        if len(group) == 1 and (why := self.ledger.may_quarantine(group[0]["audio_id"])):
            r = group[0]
            r.update(status="error", error_stage=str(ErrorStage.INFER), error=why)
            r["error_kind"] = str(ErrorKind.MODEL_CRASH)
            return
        with self._model_lock:  # begin..end covers only files really in the model
            token = self.ledger.begin([r["audio_id"] for r in group])
            try:
                self._annotate_files(group)
            except FatalModelError as exc:
                stop = self.ledger.fail(token, str(exc))
                if stop:
                    raise JobStopped(stop) from exc
                _exit_for_restart(str(exc))
            self.ledger.succeed(token)

    def _annotate_files(self, files: list[dict[str, Any]]) -> None:
        """Annotate decoded rows in place: merged fields, or an infer error row."""
        outcomes = self.annotate_files([pickle.loads(r["payload"]) for r in files])
        for r, o in zip(files, outcomes, strict=True):
            r.update(infer_s=o.infer_s, _pad_real=o.pad_real, _pad_total=o.pad_total)
            if o.error is not None:
                r.update(status="error", error_stage=str(ErrorStage.INFER), error=o.error)
                r["error_kind"] = str(ErrorKind.MODEL_ERROR)
            else:
                r.update(o.fields)

    # -- files → row fields: the one path of batch, Serve and `earmark annotate` -----------
    def annotate_files(
        self, files: list[list[Window]], tasks: list[TaskRequest] | None = None
    ) -> list[FileOutcome]:
        """One outcome per file (its windows in file order) from shared, length-bucketed model
        calls. Raises FatalModelError when the model, not a file, failed."""
        tasks = tasks or self.tasks
        windows = [w for ws in files for w in ws]
        texts, errors, (real, padded), elapsed, sent = self.annotate_gated(windows, tasks)
        total_audio = sum(w.num_samples for w, s in zip(windows, sent, strict=True) if s) or 1
        outcomes, start = [], 0
        for ws in files:
            span = range(start, start + len(ws))
            start += len(ws)
            audio = sum(windows[i].num_samples for i in span if sent[i])  # what the model saw
            outcome = FileOutcome(
                infer_s=elapsed * audio / total_audio,  # share of the calls by audio length
                pad_real=audio,
                pad_total=int(padded * audio / max(real, 1)),
            )
            bad = [errors[i] for i in span if errors[i]]
            if bad:
                outcome.error = f"{len(bad)} of {len(ws)} window(s) failed: {bad[0]}"
            else:
                outcome.fields = merge_windows(
                    ws,
                    [texts[i] or {} for i in span],
                    tasks,
                    self.family,
                    drop_flagged=self.spec.drop_flagged,
                    language=self.spec.language,
                )
                outcome.fields.update(num_windows=len(ws), **self.model_fields())
            outcomes.append(outcome)
        return outcomes

    def model_fields(self) -> dict[str, Any]:
        """The row fields that name what annotated it."""
        return {"model": self.model.name, "model_revision": self.spec.revision}
