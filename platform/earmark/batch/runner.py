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

from earmark.batch.commits import Committer, finish_output, settle_output, start_index
from earmark.batch.summary import JobSummary, new_acc
from earmark.compute.resources import check_plan, init_ray, local_cluster_size
from earmark.contracts import JobError, JobSpec
from earmark.sink.shards import SUMMARY_COLUMNS, SUMMARY_NAME, claim_output, clean_temp, list_parts
from earmark.source.walk import plan_units
from earmark.storage import Location, check_writable

log = logging.getLogger(__name__)


def preflight_model(spec: JobSpec) -> None:
    """Fail fast (before decoding) when the model cannot be loaded or cannot do the tasks."""
    from earmark.models.base import ModelLoadError
    from earmark.models.registry import model_class

    try:
        cls = model_class(spec.model.family, spec.model.engine)
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
    # the job's two places, built once: everything below takes them, never (url, options)
    source = Location(spec.source, spec.storage_options)
    out = Location(spec.output, spec.storage_options)
    check_writable(out)
    if with_model:
        preflight_model(spec)
    local = address is None and not os.environ.get("RAY_ADDRESS")
    if local and not ray.is_initialized():
        check_plan(spec.resources, local_cluster_size(spec.resources), with_model=with_model)
    units = list(plan_units(source, spec.audio_column))  # JobError: cannot list
    clean_temp(out)
    claim_output(out, job_identity(spec, with_model))
    settle_output(out, spec.output_files.target_file_mb)
    size = init_ray(address, spec.resources)
    check_plan(spec.resources, size, with_model=with_model)
    _configure_ray_data()
    from earmark.batch.ledger import start_ledger
    from earmark.batch.listing import start_tally
    from earmark.batch.pipeline import build_dataset
    from earmark.batch.reach import check_every_node_sees
    from earmark.batch.watch import watch_nodes

    index = start_index(out, retry_errors)
    check_every_node_sees(out, lambda: _peek(source, spec.audio_column))
    summary = JobSummary(job_id=spec.job_id or "", files_listed=0, files_done_before=0)
    acc = new_acc()
    tally = start_tally(len(units))
    ledger = start_ledger(spec.failures) if with_model else None
    decode_ledger = start_ledger(spec.failures, what="the decoder")
    ds = build_dataset(
        spec,
        units,
        index,
        tally,
        source=source,
        out=out,
        with_model=with_model,
        ledger=ledger,
        decode_ledger=decode_ledger,
    )
    watch_nodes(spec.resources, with_model, lambda: summary.files_ok + summary.files_error)
    committer = Committer(out, spec.output_files.target_file_mb)
    retry = ray.get(index["retry"]) if retry_errors is not None else None
    try:
        _consume(ds, summary, acc, progress, retry, committer, tally, t0)
        committer.finish()
    except JobError:
        raise
    except Exception as exc:
        stopped = [lg.stats()["stopped"] for lg in (ledger, decode_ledger) if lg is not None]
        raise JobError(next(filter(None, stopped), "") or _explain_failure(exc)) from exc
    finally:
        summary.add_failures(decode_ledger.stats(), ledger.stats() if ledger else None)
    counts = ray.get(tally.totals.remote())
    summary.files_listed, summary.files_done_before = counts["listed"], counts["done_before"]
    summary.errors_retried = counts["retried"]
    # an Annotator killed mid-write leaves its temp file; its batch was rewritten elsewhere
    clean_temp(out)
    wrote = summary.files_ok + summary.files_error > 0
    final = finish_output(out, index["info"], wrote)
    summary.duplicates_removed, summary.rows_superseded = final["duplicates"], final["superseded"]
    summary.output_rows, summary.output_ok = final["rows"], final["ok"]
    summary.output_files = len(list_parts(out))
    summary.finish(acc, time.perf_counter() - t0)
    summary.driver_peak_rss_mb = _peak_rss_mb()
    out.fs.pipe_file(out.join(SUMMARY_NAME), summary.to_json().encode())
    return summary


def _peek(source: Location, audio_col: str | None) -> list[dict[str, Any]]:
    """A few listed files (the first page), for the check that every node sees the source."""
    from earmark.source.walk import iter_listing

    for page in iter_listing(source, audio_col):
        return page[:50]
    return []


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM counts this program only: ru_maxrss
    also keeps the peak of the process that forked it (a 2.6 GB benchmark driver made every
    scan it started report 2.6 GB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def job_identity(spec: JobSpec, with_model: bool) -> dict[str, Any]:
    """What decides a row's content: a rerun with the same identity may skip done files."""
    if not with_model:
        return {"kind": "scan"}
    from earmark.models.registry import model_class

    cls = model_class(spec.model.family)
    identity = {
        "kind": "annotate",
        "model": f"{spec.model.family}:{spec.model.checkpoint or cls.info.default_checkpoint}",
        "tasks": [t.model_dump() for t in spec.tasks],
    }
    if spec.model.engine != "hf":  # another engine may give other rows; hf ids stay as they were
        identity["engine"] = spec.model.engine
    return identity


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
    progress: bool,
    retry: Any,
    committer: Committer,
    tally: Any,
    t0: float,
) -> None:
    import ray

    done = 0
    todo = _Todo(tally)
    with _progress_display(progress) as report:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if summary.first_file_s is None:
                summary.first_file_s = round(time.perf_counter() - t0, 3)
            committer.add(batch)
            summary.add(batch.select(SUMMARY_COLUMNS).to_pylist(), acc)
            if retry is not None and len(retry):
                again = retry.contains(batch.column("audio_id"))
                ok = batch.column("status").to_numpy(zero_copy_only=False) == "ok"
                summary.errors_now_ok += int((again & ok).sum())
            done += batch.num_rows
            report(done, acc["audio_s"], summary.files_error, *todo.total(ray))
        report(done, acc["audio_s"], summary.files_error, *todo.total(ray, final=True))


class _Todo:
    """Files to do so far (listed, less those done before) and whether the listing goes on,
    asked of the tally once a second."""

    def __init__(self, tally: Any) -> None:
        self.tally, self.at, self.value = tally, 0.0, (0, True)

    def total(self, ray: Any, final: bool = False) -> tuple[int, bool]:
        now = time.monotonic()
        if final or now - self.at >= 1.0:
            t = ray.get(self.tally.totals.remote())
            self.value, self.at = (t["listed"] - t["done_before"], t["listing"] and not final), now
        return self.value


# files done, audio seconds, errors, files to do so far, still listing (running totals)
Report = Callable[[int, float, int, int, bool], None]


@contextmanager
def _progress_display(enabled: bool) -> Iterator[Report]:
    """A rich bar on a terminal; anywhere else (a submitted job's logs, a pipe) plain lines on
    stdout at a steady pace, since a bar off a terminal prints nothing until the job ends."""
    from rich import get_console

    from earmark.batch.progress import ProgressLines

    if not enabled:
        yield lambda done, audio_s, errors, total, listing: None
    elif get_console().is_terminal:  # the console rich's Progress draws on
        with _rich_bar() as report:
            yield report
    else:
        with ProgressLines(0, listing=True) as lines:
            yield lines.update


@contextmanager
def _rich_bar() -> Iterator[Report]:
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
        task = bar.add_task("annotating", total=None, hours=0.0, errors=0)

        def report(done: int, audio_s: float, errors: int, total: int, listing: bool) -> None:
            what = "listing + annotating" if listing else "annotating"
            bar.update(task, completed=done, total=total, hours=audio_s / 3600, errors=errors,
                       description=what)  # fmt: skip

        yield report


def _explain_failure(exc: Exception) -> str:
    text = str(exc)
    if "ModelLoadError" in text or "could not be loaded" in text.lower():
        return f"the Annotator could not load the model: {text.splitlines()[-1]}"
    return f"the job failed: {type(exc).__name__}: {text.splitlines()[-1] if text else ''}"
