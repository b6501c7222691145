"""The earmark command line (Typer). Parsing and printing only; the work lives elsewhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from earmark import __version__

app = typer.Typer(
    help="Annotate large audio archives with audio-language models on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Model families earmark can run.", no_args_is_help=True)
schemas_app = typer.Typer(help="Contract snapshots (JSON Schema, Arrow).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(schemas_app, name="schemas")
console = Console(stderr=True)
out = Console()

SourceArg = Annotated[
    str, typer.Argument(help="Folder, bucket prefix, glob, or .parquet/.jsonl/.csv manifest")
]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="Output folder (local or s3://...)")]
StorageOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-S", help="fsspec storage option key=value (repeatable)"),
]


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code)


def _spec(**kw):
    """Build a JobSpec from a YAML spec and flag overrides; name the bad field on error."""
    from pydantic import ValidationError

    from earmark.schemas import JobSpec, ModelSpec

    spec_path = kw.pop("spec", None)
    model = kw.pop("model", None)
    data = {k: v for k, v in kw.items() if v is not None}
    try:
        base = {}
        if spec_path:
            import yaml

            base = yaml.safe_load(Path(spec_path).read_text()) or {}
            if not isinstance(base, dict):
                _fail(f"{spec_path}: a job spec must be a mapping")
        if model:
            m = ModelSpec.parse(model)
            base["model"] = {**base.get("model", {}), "family": m.family, "checkpoint": m.checkpoint}
        resources = data.pop("resources", None)
        if resources:
            base["resources"] = {**base.get("resources", {}), **resources}
        base.update(data)
        return JobSpec.model_validate(base)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        ]
        _fail("invalid job spec:\n" + "\n".join(lines))
    except (ValueError, OSError) as exc:
        _fail(str(exc))


def _print_summary(summary) -> None:
    t = Table(title=f"job {summary.job_id}", show_header=False)
    t.add_row("files listed", str(summary.files_listed))
    t.add_row("already done (skipped)", str(summary.files_done_before))
    t.add_row("ok / error", f"{summary.files_ok} / {summary.files_error}")
    t.add_row("audio", f"{summary.audio_hours:.3f} h")
    t.add_row("wall", f"{summary.wall_s:.1f} s")
    t.add_row("throughput", f"{summary.audio_hours_per_wall_hour:.1f} audio-h per wall-h")
    if summary.decode_realtime_factor:
        t.add_row("decode speed", f"{summary.decode_realtime_factor:.0f}× realtime per worker")
    if summary.infer_realtime_factor:
        t.add_row("model speed", f"{summary.infer_realtime_factor:.1f}× realtime per actor")
    if summary.padding_fraction is not None:
        t.add_row("padding", f"{100 * summary.padding_fraction:.1f}% of model input")
    for k, v in sorted(summary.errors_by_kind.items()):
        t.add_row(f"error {k}", str(v))
    console.print(t)


def _run(spec, *, with_model: bool, address: str | None) -> None:
    from earmark.batch.runner import run_job
    from earmark.schemas import JobError

    try:
        summary = run_job(spec, address=address, with_model=with_model, progress=True)
    except JobError as exc:
        _fail(str(exc), code=1)
    _print_summary(summary)


@app.command()
def scan(
    source: SourceArg,
    out_: OutOpt,
    storage_option: StorageOpt = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
) -> None:
    """Inventory an archive: one Parquet row per file with codec, rate, channels, duration and
    status — the CPU half of `earmark run`, with no model."""
    from earmark.io.storage import parse_storage_options

    spec = _spec(
        source=source,
        output=out_,
        storage_options=parse_storage_options(storage_option),
        resources={"cluster_cpus": cpus} if cpus else None,
    )
    _run(spec, with_model=False, address=address)


@app.command()
def run(
    source: Annotated[str | None, typer.Argument(help="Source (overrides the spec's)")] = None,
    out_: Annotated[str | None, typer.Option("--out", "-o", help="Output folder")] = None,
    tasks: Annotated[str | None, typer.Option(help='e.g. asr,caption,tags,mood="What mood?"')] = None,
    model: Annotated[str | None, typer.Option(help="FAMILY or FAMILY:CHECKPOINT")] = None,
    spec: Annotated[Path | None, typer.Option(help="YAML job spec (flags override it)")] = None,
    storage_option: StorageOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per model call")] = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
) -> None:
    """Annotate an archive: decode, run the model on every file, write one Parquet row per file.
    Rerunning on the same output resumes where it stopped."""
    from earmark.io.storage import parse_storage_options

    js = _spec(
        spec=spec,
        source=source,
        output=out_,
        tasks=tasks,
        model=model,
        storage_options=parse_storage_options(storage_option) or None,
        resources={"cluster_cpus": cpus} if cpus else None,
    )
    if batch_size:
        js.model.batch_size = batch_size
    _run(js, with_model=True, address=address)


@app.command()
def annotate(
    files: Annotated[list[Path], typer.Argument(help="Audio files")],
    model: Annotated[str, typer.Option(help="FAMILY or FAMILY:CHECKPOINT")] = "eureka",
    tasks: Annotated[str, typer.Option(help="asr,caption,tags or name=\"prompt\"")] = "asr",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON row per file")] = False,
) -> None:
    """Annotate a few local files right here, without Ray."""
    from earmark.local import annotate_files
    from earmark.schemas import JobError, ModelSpec, parse_tasks

    try:
        spec = ModelSpec.parse(model)
        task_list = parse_tasks(tasks)
        rows = annotate_files([str(f) for f in files], spec, task_list)
    except (JobError, ValueError) as exc:
        _fail(str(exc), code=1)
    for row in rows:
        if as_json:
            out.print_json(json.dumps(row, default=str), indent=None)
            continue
        t = Table(title=row["uri"], show_header=False, title_justify="left")
        for k in ("status", "error", "duration_s", "codec", "transcript", "caption", "tags"):
            if row.get(k) not in (None, []):
                t.add_row(k, str(row[k]))
        for a in row.get("answers") or []:
            t.add_row(a["name"], a["text"])
        out.print(t)
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)


@models_app.command("list")
def models_list() -> None:
    """Families, default checkpoints, window length and audio tokens per second."""
    from earmark.models.registry import FAMILIES

    t = Table("family", "default checkpoint", "window", "audio tokens/s", "tasks", expand=False)
    t.columns[1].no_wrap = True
    for info in FAMILIES.values():
        tps = "—" if info.audio_tokens_per_s is None else f"{info.audio_tokens_per_s:g}"
        t.add_row(info.name, info.default_checkpoint, f"{info.window_s:g} s", tps, ", ".join(info.tasks))
    out.print(t)


@schemas_app.command("export")
def schemas_export(
    folder: Annotated[Path, typer.Argument(help="Where to write")] = Path("schemas"),
) -> None:
    """Write JSON Schema (job spec, row) and the output's Arrow schema."""
    from earmark.contracts import export

    for p in export(folder):
        out.print(str(p))


@app.command()
def version() -> None:
    """Print the earmark version."""
    out.print(__version__)


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
    from earmark.schemas import JobError

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

    from earmark import cluster
    from earmark.schemas import JobError

    try:
        js = cluster.load_spec(spec, output=out_)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        _fail(f"invalid job spec {spec}:\n" + "\n".join(lines))
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

    from earmark import cluster

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
    """Status of a job (and its message when it failed)."""
    from earmark import cluster

    client = _cluster(cluster.connect, address)
    sid = _cluster(cluster.resolve, client, ref)
    info = _cluster(client.get_job_info, sid)
    if as_json:
        data = {"submission_id": sid, "status": str(info.status), "message": info.message,
                "start_time": info.start_time, "end_time": info.end_time,
                "metadata": info.metadata}  # fmt: skip
        out.print_json(json.dumps(data))
        return
    out.print(f"{sid}: {info.status}")
    if info.message:
        out.print(info.message)


@jobs_app.command("logs")
def jobs_logs(
    ref: JobRef,
    address: AddressOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream until the job ends")
    ] = False,
) -> None:
    """A job's driver logs; with --follow, streamed until it ends (exit 1 unless it succeeded)."""
    from earmark import cluster

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
    from earmark import cluster

    client = _cluster(cluster.connect, address)
    sid = _cluster(cluster.resolve, client, ref)
    status = _cluster(cluster.stop, client, sid, wait_s=wait)
    out.print(f"{sid}: {status}")
    if status in cluster.ACTIVE:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------
# Online endpoint (Ray Serve): `earmark serve`, `earmark query`, `earmark bench serve`;
# the work is in earmark.serve and earmark.bench
# ---------------------------------------------------------------------------------------------

bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
ServeConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Serve spec or serve_app/*.yaml config")
]
ServeModelOpt = Annotated[
    str | None, typer.Option("--model", help="FAMILY or FAMILY:CHECKPOINT (overrides config)")
]


def _serve_spec(config: Path | None, model: str | None, cpus: int | None):
    """A ServeSpec from a config file and flag overrides; name the bad field on error."""
    from pydantic import ValidationError

    from earmark.schemas import ModelSpec
    from earmark.serve.config import ServeSpec

    try:
        data = ServeSpec.from_yaml(config).model_dump() if config else {}
        if model:
            m = ModelSpec.parse(model)
            data["model"] = {**data.get("model", {}), "family": m.family}
            data["model"]["checkpoint"] = m.checkpoint
        if cpus:
            data.setdefault("resources", {})["cluster_cpus"] = cpus
        return ServeSpec.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        ]
        _fail("invalid serve spec:\n" + "\n".join(lines))
    except (ValueError, OSError) as exc:
        _fail(str(exc))


@app.command("serve")
def serve_cmd(
    model: ServeModelOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    config: ServeConfigOpt = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
) -> None:
    """Serve the model over HTTP until Ctrl-C: POST /v1/annotate, the OpenAI-compatible
    /v1/audio/transcriptions, GET /v1/models, /healthz. EARMARK_API_KEY, when set, is the
    bearer token every route but /healthz requires."""
    from earmark.schemas import JobError
    from earmark.serve.run import run_until_stopped

    spec = _serve_spec(config, model, cpus)

    def ready(url: str) -> None:
        console.print(f"earmark serving {spec.model_id} at {url} (Ctrl-C stops)")

    try:
        run_until_stopped(spec, host, port, address=address, on_ready=ready)
    except JobError as exc:
        _fail(str(exc), code=1)
    console.print("stopped")


@app.command()
def query(
    file: Annotated[str, typer.Argument(help="Audio file, or an s3://... / https://... URL")],
    url: Annotated[
        str, typer.Option(envvar="EARMARK_URL", help="Server URL")
    ] = "http://127.0.0.1:8000",
    tasks: Annotated[str | None, typer.Option(help='e.g. asr,caption,mood="What mood?"')] = None,
) -> None:
    """Annotate one file on a running server; print the output row as JSON. The token is read
    from EARMARK_API_KEY."""
    from earmark.serve.client import QueryError, annotate

    try:
        row = annotate(file, url, tasks=tasks)
    except QueryError as exc:
        _fail(str(exc), code=1)
    out.print_json(json.dumps(row, default=str))


@bench_app.command("serve")
def bench_serve(
    model: Annotated[str, typer.Option(help="FAMILY or FAMILY:CHECKPOINT")] = "whisper:tiny.en",
    config: ServeConfigOpt = None,
    clients: Annotated[str, typer.Option(help="Concurrent client counts")] = "1,8,32",
    rounds: Annotated[int, typer.Option(help="Requests per client at each level")] = 4,
    min_requests: Annotated[int, typer.Option(help="Requests at least, per level")] = 16,
    max_batch_size: Annotated[int | None, typer.Option(help="@serve.batch size when on")] = None,
    clips: Annotated[Path, typer.Option(help="Folder with manifest.jsonl")] = Path("data/demo"),
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here")] = None,
) -> None:
    """Throughput and p50/p99 latency at 1, 8, 32 clients with @serve.batch on and off."""
    from earmark.bench.serve_bench import format_results, load_clips, results_json, run_serve_bench
    from earmark.schemas import JobError

    spec = _serve_spec(config, model, cpus)
    if max_batch_size:
        spec.batching.max_batch_size = max_batch_size
    try:
        levels = tuple(int(c) for c in clients.split(","))
        results = run_serve_bench(
            spec, load_clips(clips), concurrency=levels, rounds=rounds, min_requests=min_requests,
            log=console.print,
        )  # fmt: skip
    except (JobError, ValueError, OSError) as exc:
        _fail(str(exc), code=1)
    typer.echo(format_results(results))
    if json_out:
        json_out.write_text(results_json(results))


from earmark.cli_results import register as _register_results  # noqa: E402

_register_results(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
