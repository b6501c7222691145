"""CLI: cluster jobs over the Ray Jobs API (`earmark submit`, `earmark jobs ...`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from earmark.cli.common import app, console, out
from earmark.cli.common import fail as _fail
from earmark.contracts.errors import validation_problems

# ---------------------------------------------------------------------------------------------
# Cluster jobs (Ray Jobs API): `earmark submit` and `earmark jobs ...`; the work is in cluster.py
# ---------------------------------------------------------------------------------------------

jobs_app = typer.Typer(help="Jobs on a Ray cluster (Ray Jobs API).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
AddressOpt = Annotated[
    str | None,
    typer.Option(envvar="RAY_ADDRESS", help="Ray dashboard address, e.g. http://HEAD:8265"),
]
JobRef = Annotated[str, typer.Argument(help="Submission id, or an earmark job id (latest attempt)")]


def _cluster(fn, *args, **kw):
    """Call into earmark.cluster; print a JobError (bad spec, no cluster) without a trace."""
    from earmark.contracts import JobError

    try:
        return fn(*args, **kw)
    except JobError as exc:
        _fail(str(exc), code=1)
    except Exception as exc:  # the Ray SDK raises RuntimeError/AuthenticationError with a message
        _fail(f"{type(exc).__name__}: {exc}", code=1)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="YAML job spec (jobs/*.yaml)")],
    address: AddressOpt = None,
    out_: Annotated[
        str | None, typer.Option("--out", "-o", help="Output (overrides the spec's)")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Run in this container image (runtime_env image_uri)")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the job (repeatable)")
    ] = None,
    upload: Annotated[bool, typer.Option(help="Upload the earmark package with the job")] = True,
    rerun: Annotated[bool, typer.Option(help="Start a new attempt even if one succeeded")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the logs until it ends")
    ] = False,
) -> None:
    """Submit a job spec to a Ray cluster. Submitting the same spec and output again returns the
    running or finished job instead of starting a second one."""
    from pydantic import ValidationError

    from earmark.cluster import jobs as cluster
    from earmark.contracts import JobError

    try:
        js = cluster.load_spec(spec, output=out_)
    except ValidationError as exc:
        _fail(f"invalid job spec {spec}:\n  " + "\n  ".join(validation_problems(exc.errors())))
    except (JobError, ValueError, OSError) as exc:
        _fail(str(exc))
    env_vars = _cluster(cluster.parse_env, env)
    client = _cluster(cluster.connect, address)
    sub = _cluster(
        cluster.submit, js, client, image=image, upload=upload, env=env_vars, rerun=rerun
    )
    console.print(sub.note)
    out.print(sub.submission_id)
    if follow:
        status = _cluster(cluster.follow_logs, client, sub.submission_id, _write_raw)
        console.print(f"{sub.submission_id}: {status}")
        raise typer.Exit(0 if status == "SUCCEEDED" else 1)


def _write_raw(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@jobs_app.command("list")
def jobs_list(
    address: AddressOpt = None,
    every: Annotated[
        bool, typer.Option("--all", help="Include jobs not started by earmark")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per job")] = False,
) -> None:
    """Jobs on the cluster, oldest first."""
    import datetime as dt

    from earmark.cluster import jobs as cluster

    client = _cluster(cluster.connect, address)
    jobs = _cluster(cluster.list_jobs, client, every=every)
    if as_json:
        for j in jobs:
            row = {
                "submission_id": j.submission_id,
                "status": str(j.status),
                "start_time": j.start_time,
                "metadata": j.metadata,
            }
            out.print_json(json.dumps(row), indent=None)
        return
    t = Table("submission id", "status", "started", "source → output")
    for j in jobs:
        meta = j.metadata or {}
        started = dt.datetime.fromtimestamp((j.start_time or 0) / 1000).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        where = f"{meta['source']} → {meta['output']}" if "output" in meta else j.entrypoint
        t.add_row(j.submission_id or j.job_id or "?", str(j.status), started, where)
    out.print(t)


@jobs_app.command("status")
def jobs_status(
    ref: JobRef,
    address: AddressOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job details as JSON")] = False,
) -> None:
    """Status of a job, its latest progress line, and its message when it failed."""
    from earmark.cluster import jobs as cluster

    client = _cluster(cluster.connect, address)
    sid = _cluster(cluster.resolve, client, ref)
    info = _cluster(client.get_job_info, sid)
    progress = _latest_progress(client, sid)
    if as_json:
        data = {"submission_id": sid, "status": str(info.status), "message": info.message,
                "start_time": info.start_time, "end_time": info.end_time,
                "metadata": info.metadata, "progress": progress}  # fmt: skip
        out.print_json(json.dumps(data))
        return
    out.print(f"{sid}: {info.status}")
    if progress:
        out.print(progress, markup=False, highlight=False, soft_wrap=True)
    if info.message:
        out.print(info.message)


def _latest_progress(client, sid: str) -> str | None:
    """The last progress line the job's driver printed, read from its logs: Ray keeps a job's
    metadata as submitted, so a running driver has no other place to report to."""
    from earmark.batch.progress import latest_line

    try:
        return latest_line(client.get_job_logs(sid))
    except RuntimeError:  # no logs yet (a pending job), or the head refused: status still shows
        return None


@jobs_app.command("logs")
def jobs_logs(
    ref: JobRef,
    address: AddressOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends")
    ] = False,
) -> None:
    """A job's driver logs; with --follow, streamed until it ends (exit 1 unless it succeeded)."""
    from earmark.cluster import jobs as cluster

    client = _cluster(cluster.connect, address)
    sid = _cluster(cluster.resolve, client, ref)
    if not follow:
        _write_raw(_cluster(client.get_job_logs, sid))
        return
    status = _cluster(cluster.follow_logs, client, sid, _write_raw)
    console.print(f"{sid}: {status}")
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


@jobs_app.command("stop")
def jobs_stop(
    ref: JobRef,
    address: AddressOpt = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for it to stop")] = 30.0,
) -> None:
    """Stop a running job; rows already written stay, and a resubmit resumes from them."""
    from earmark.cluster import jobs as cluster

    client = _cluster(cluster.connect, address)
    sid = _cluster(cluster.resolve, client, ref)
    status = _cluster(cluster.stop, client, sid, wait_s=wait)
    out.print(f"{sid}: {status}")
    if status in cluster.ACTIVE:
        raise typer.Exit(1)
