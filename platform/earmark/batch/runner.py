"""Run a job end to end: preflight checks, resume, the Ray Data graph, progress, summary.

Everything that can stop a job is checked before any file is decoded: the output is writable,
the source can be listed, the plan fits the cluster, and the model checkpoint is there.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from earmark.batch.summary import JobSummary, new_acc
from earmark.compute.resources import check_plan, init_ray, local_cluster_size
from earmark.contracts import JobError, JobSpec
from earmark.sink.shards import (
    SUMMARY_NAME,
    claim_output,
    clean_temp,
    repair_duplicates,
    resume_state,
)
from earmark.source.listing import list_source
from earmark.storage import check_writable, get_fs

log = logging.getLogger(__name__)


def preflight_model(spec: JobSpec) -> None:
    """Fail fast (before decoding) when the model cannot be loaded or cannot do the tasks."""
    from earmark.models.base import ModelLoadError
    from earmark.models.registry import model_class

    cls = model_class(spec.model.family)
    try:
        cls.preflight(spec.model.checkpoint or cls.info.default_checkpoint)
    except ModelLoadError as exc:
        raise JobError(f"model cannot be loaded: {exc}") from exc
    for t in spec.tasks:
        ok = ("custom" in cls.info.tasks) if t.is_custom else (t.name in cls.info.tasks)
        if not ok:
            raise JobError(
                f"model family {cls.info.name!r} cannot do task {t.name!r} "
                f"(it supports {', '.join(cls.info.tasks)}); change --tasks or --model"
            )


def run_job(
    spec: JobSpec,
    *,
    address: str | None = None,
    with_model: bool = True,
    progress: bool = True,
    retry_errors: frozenset[str] | None = None,
) -> JobSummary:
    """Run (or resume) a job; returns its summary, also written to OUTPUT/_summary.json.

    `retry_errors`: annotate the output's error rows again (of these error kinds; empty: every
    kind); each new row replaces its old one."""
    import ray

    t0 = time.perf_counter()
    check_writable(spec.output, spec.storage_options)
    if with_model:
        preflight_model(spec)
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local and not ray.is_initialized():
        check_plan(spec.resources, local_cluster_size(spec.resources), with_model=with_model)
    rows = list_source(spec.source, spec.storage_options)
    clean_temp(spec.output, spec.storage_options)
    state = resume_state(spec.output, spec.storage_options, retry_errors)
    done = state.done
    claim_output(spec.output, job_identity(spec, with_model), spec.storage_options)
    retry = {a: state.retry[a] for a in (r["audio_id"] for r in rows) if a in state.retry}
    todo = [r for r in rows if r["audio_id"] not in done or r["audio_id"] in retry]
    # a listed file whose row has another audio_id changed since (size, mtime or etag): its
    # new row replaces the old one once written
    current = {r["uri"]: r["audio_id"] for r in rows}
    superseded = {a for a, uri in done.items() if uri in current and current[uri] != a}
    summary = JobSummary(
        job_id=spec.job_id or "",
        files_listed=len(rows),
        files_done_before=len(rows) - len(todo),
        errors_retried=len(retry),
    )
    acc = new_acc()
    written: dict[str, str] = {}  # retried audio_id → status of its new row
    if todo:
        size = init_ray(address, spec.resources)
        check_plan(spec.resources, size, with_model=with_model)
        _configure_ray_data()
        from earmark.batch.ledger import start_ledger
        from earmark.batch.pipeline import build_dataset
        from earmark.batch.reach import check_every_node_sees
        from earmark.batch.watch import watch_nodes

        check_every_node_sees(spec.output, spec.storage_options, todo)

        ledger = start_ledger(spec.failures) if with_model else None
        decode_ledger = start_ledger(spec.failures, what="the decoder")
        ds = build_dataset(
            spec, todo, with_model=with_model, ledger=ledger, decode_ledger=decode_ledger
        )
        watch_nodes(spec.resources, with_model, lambda: summary.files_ok + summary.files_error)
        try:
            _consume(ds, summary, acc, len(todo), progress, retry, written)
        except JobError:
            raise
        except Exception as exc:
            stopped = [lg.stats()["stopped"] for lg in (ledger, decode_ledger) if lg is not None]
            raise JobError(next(filter(None, stopped), "") or _explain_failure(exc)) from exc
        finally:
            summary.add_failures(decode_ledger.stats(), ledger.stats() if ledger else None)
        # an Annotator killed mid-write leaves its temp file; its batch was rewritten elsewhere
        clean_temp(spec.output, spec.storage_options)
    summary.errors_now_ok = sum(st == "ok" for st in written.values())
    replaced = state.stale | {a: retry[a] for a in written}
    repaired = repair_duplicates(spec.output, spec.storage_options, superseded, replaced)
    summary.duplicates_removed, summary.rows_superseded = repaired.duplicates, repaired.superseded
    summary.output_rows, summary.output_ok = repaired.rows, repaired.ok
    summary.finish(acc, time.perf_counter() - t0)
    fs, root = get_fs(spec.output, spec.storage_options)
    fs.pipe_file(f"{root.rstrip('/')}/{SUMMARY_NAME}", summary.to_json().encode())
    return summary


def job_identity(spec: JobSpec, with_model: bool) -> dict[str, Any]:
    """What decides a row's content: a rerun with the same identity may skip done files."""
    if not with_model:
        return {"kind": "scan"}
    from earmark.models.registry import model_class

    cls = model_class(spec.model.family)
    return {
        "kind": "annotate",
        "model": f"{spec.model.family}:{spec.model.checkpoint or cls.info.default_checkpoint}",
        "tasks": [t.model_dump() for t in spec.tasks],
    }


def _configure_ray_data() -> None:
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # earmark draws its own bar, counted in files
    ctx.execution_options.preserve_order = False
    ctx.log_internal_stack_trace_to_stdout = False
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _consume(
    ds: Any,
    summary: JobSummary,
    acc: dict,
    total: int,
    progress: bool,
    retry: dict[str, Any],
    written: dict[str, str],
) -> None:
    done = 0
    with _progress_display(total, progress) as report:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = batch.to_pylist()
            summary.add(rows, acc)
            written.update((r["audio_id"], r["status"]) for r in rows if r["audio_id"] in retry)
            done += len(rows)
            report(done, acc["audio_s"], summary.files_error)


Report = Callable[[int, float, int], None]  # files done, audio seconds, errors (running totals)


@contextmanager
def _progress_display(total: int, enabled: bool) -> Iterator[Report]:
    """A rich bar on a terminal; anywhere else (a submitted job's logs, a pipe) plain lines on
    stdout at a steady pace, since a bar off a terminal prints nothing until the job ends."""
    from rich import get_console

    from earmark.batch.progress import ProgressLines

    if not enabled:
        yield lambda done, audio_s, errors: None
    elif get_console().is_terminal:  # the console rich's Progress draws on
        with _rich_bar(total) as report:
            yield report
    else:
        with ProgressLines(total) as lines:
            yield lines.update


@contextmanager
def _rich_bar(total: int) -> Iterator[Report]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[hours]:.2f} h audio · {task.fields[errors]} errors"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*cols, transient=False) as bar:
        task = bar.add_task("annotating", total=total, hours=0.0, errors=0)

        def report(done: int, audio_s: float, errors: int) -> None:
            bar.update(task, completed=done, hours=audio_s / 3600, errors=errors)

        yield report


def _explain_failure(exc: Exception) -> str:
    text = str(exc)
    if "ModelLoadError" in text or "could not be loaded" in text.lower():
        return f"the Annotator could not load the model: {text.splitlines()[-1]}"
    return f"the job failed: {type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
