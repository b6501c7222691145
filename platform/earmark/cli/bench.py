"""`earmark bench ...`: benchmarks that print figures measured side by side in one run; the work
is in earmark.bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from earmark.cli.common import app, console
from earmark.cli.common import fail as _fail
from earmark.cli.serve import ServeConfigOpt, _serve_spec

bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def bench_options(
    speech: Annotated[
        Path, typer.Option(help="Folder of speech clips the benchmark corpora mix")
    ] = Path("data/demo"),
) -> None:
    """Benchmarks that print figures, measured side by side in one run."""
    from earmark.bench import corpus

    corpus.SPEECH_DIR = speech  # checked where a benchmark first reads it


@bench_app.command("serve")
def bench_serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="FAMILY[:CHECKPOINT], or eureka-tiny (the offline stand-in, built in the work "
            "dir); repeat for several. Default: whisper:tiny.en and eureka-tiny"
        ),
    ] = None,
    config: ServeConfigOpt = None,
    clients: Annotated[str, typer.Option(help="Concurrent client counts")] = "1,8,32",
    rounds: Annotated[int, typer.Option(help="Requests per client at each level")] = 4,
    min_requests: Annotated[int, typer.Option(help="Requests at least, per level")] = 16,
    max_batch_size: Annotated[
        int | None, typer.Option(help="@serve.batch size with batching on; off: 1  [default: 32]")
    ] = None,
    batch_wait_s: Annotated[
        float | None, typer.Option(help="@serve.batch wait timeout, s (default: the spec's)")
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            help="Generation limit per task; the stand-in always reaches it  [default: 128]"
        ),
    ] = None,
    tasks: Annotated[str | None, typer.Option(help="Tasks per request (default: asr)")] = None,
    pack_windows: Annotated[
        bool | None,
        typer.Option(
            help="whisper: pack windows of different requests into shared inputs (Serve leaves "
            "it off unless the config sets model.pack_windows)  [default: the config's]"
        ),
    ] = None,
    clips: Annotated[Path, typer.Option(help="Folder with manifest.jsonl")] = Path("data/demo"),
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    workdir: Annotated[str | None, typer.Option(help="Where to build the stand-in")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here")] = None,
) -> None:
    """Throughput and p50/p99 latency at 1, 8, 32 clients with @serve.batch on and off, per
    model, side by side; the same deployment both ways (off: max_batch_size 1)."""
    from earmark.bench.common import workspace
    from earmark.bench.serve_bench import (
        DEFAULT_MAX_BATCH_SIZE,
        DEFAULT_MAX_NEW_TOKENS,
        DEFAULT_MODELS,
        bench_spec,
        format_bench,
        load_clips,
        resolve_model,
        results_json,
        run_serve_bench,
    )
    from earmark.contracts import JobError

    try:
        levels = tuple(int(c) for c in clients.split(","))
    except ValueError:
        _fail(f"--clients must be comma-separated integers, got {clients!r}")
    with workspace(workdir, "earmark-bench-serve-") as work:
        specs = []
        for name in model or DEFAULT_MODELS:
            try:
                resolved = resolve_model(name, work)
            except (ValueError, OSError) as exc:
                _fail(f"cannot build {name}: {exc}")
            spec = _serve_spec(config, resolved, cpus)
            if tasks:
                spec = _serve_spec_with_tasks(spec, tasks)
            specs.append(
                bench_spec(
                    spec,
                    max_batch_size=max_batch_size or DEFAULT_MAX_BATCH_SIZE,
                    batch_wait_timeout_s=batch_wait_s,
                    max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
                    pack_windows=pack_windows,
                )
            )
        try:
            benches = run_serve_bench(
                specs, load_clips(clips), concurrency=levels, rounds=rounds,
                min_requests=min_requests, log=console.print,
            )  # fmt: skip
        except (JobError, ValueError, OSError) as exc:
            _fail(str(exc), code=1)
    for b in benches:
        typer.echo("\n" + format_bench(b))
    if json_out:
        json_out.write_text(results_json(benches))


def _serve_spec_with_tasks(spec, tasks: str):
    """The spec with other default tasks; a task the model cannot do is refused by name."""
    from pydantic import ValidationError

    from earmark.serve.config import ServeSpec

    try:
        return ServeSpec.model_validate({**spec.model_dump(), "tasks": tasks})
    except (ValidationError, ValueError) as exc:
        _fail(f"--tasks {tasks!r}: {exc}")


@bench_app.command("decode")
def bench_decode_cmd(
    hours: Annotated[float, typer.Option(help="Hours of mixed-format audio to generate")] = 1.0,
    workdir: Annotated[str | None, typer.Option(help="Where to put the corpus")] = None,
    scale_check: Annotated[bool, typer.Option(help="Also measure peak RSS at 10× size")] = True,
    repeats: Annotated[
        int, typer.Option(min=1, help="Timed runs of the probe loop and the 1× scan (fastest)")
    ] = 2,
) -> None:
    """Plain decode loop vs `earmark scan` on local Ray, per core; peak RSS at 1× and 10×."""
    from earmark.bench.decode_bench import bench_decode

    bench_decode(hours, workdir, scale_check, repeats=repeats)


@bench_app.command("model")
def bench_model_cmd(
    workdir: Annotated[str | None, typer.Option(help="Where to build tiny checkpoints")] = None,
) -> None:
    """Encode-once vs single-task passes, padding with and without bucketing, windows/s."""
    from earmark.bench.model_bench import bench_model

    bench_model(workdir)


@bench_app.command("engine")
def bench_engine_cmd(
    model: Annotated[
        str, typer.Option(help="FAMILY[:CHECKPOINT] (moss, midashenglm); tiny one when bare")
    ] = "moss",
    windows: Annotated[int, typer.Option(min=1, help="Windows (1-30 s, fixed seed)")] = 32,
    tasks: Annotated[str, typer.Option(help="Tasks asked of every window")] = "asr,caption,tags",
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per model call")] = 8,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
    repeats: Annotated[int, typer.Option(min=1, help="Alternating runs per engine")] = 3,
    workdir: Annotated[str | None, typer.Option(help="Where to build tiny checkpoints")] = None,
) -> None:
    """The same windows through the hf and vllm engines: audio-s/s, tokens/s, padding, peak
    memory, and what vLLM spent per window on encoder and prefill."""
    from earmark.bench.engine_bench import bench_engine

    try:
        bench_engine(model, windows, tasks, batch_size, max_new_tokens, repeats, workdir)
    except ValueError as exc:
        _fail(str(exc), code=2)


@bench_app.command("run")
def bench_run_cmd(
    minutes: Annotated[float, typer.Option(help="Minutes of audio in the corpus")] = 30.0,
    workdir: Annotated[str | None, typer.Option(help="Where to put the corpus")] = None,
    scale_check: Annotated[bool, typer.Option(help="Also measure peak memory at 10× size")] = True,
) -> None:
    """earmark run vs a naive Ray Data recipe vs a plain loop, audio-hours per wall-hour."""
    from earmark.bench.run_bench import bench_run

    bench_run(minutes, workdir, scale_check)


@bench_app.command("quality")
def bench_quality_cmd(
    clips: Annotated[int, typer.Option(min=1, help="Non-speech clips (1-60 s, 12 kinds)")] = 240,
    speech_files: Annotated[
        int, typer.Option(min=1, help="Long speech files of 8 demo sentences each")
    ] = 6,
    workdir: Annotated[str | None, typer.Option(help="Where to put the corpora")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here")] = None,
) -> None:
    """Whisper tiny.en with and without the speech gate: non-speech files given text, speech
    WER, word-timing checks, ASR model time on a half-speech corpus."""
    from earmark.bench.quality_bench import bench_quality

    bench_quality(clips, speech_files, workdir, json_out)


@bench_app.command("scale")
def bench_scale_cmd(
    sizes: Annotated[
        str, typer.Option(help="Corpus sizes in files, comma-separated; '' for none")
    ] = "10000,100000,1000000",
    source: Annotated[
        str, typer.Option(help="manifest (a .jsonl listing) or folder (the nested folders)")
    ] = "manifest",
    cpus: Annotated[int, typer.Option(min=1, help="--cpus of every earmark scan")] = 2,
    packed: Annotated[
        bool, typer.Option(help="Also compare Parquet and WebDataset input with loose files")
    ] = False,
    packed_clips: Annotated[
        int, typer.Option(min=1, help="Speech clips (1-5 s) in the packed comparison")
    ] = 2000,
    s3_objects: Annotated[
        int, typer.Option(help="Also scan this many objects on a local SeaweedFS (e.g. 20000)")
    ] = 0,
    workdir: Annotated[str | None, typer.Option(help="Where to put the corpora (kept)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here")] = None,
) -> None:
    """earmark scan on 10k, 100k, 1M tiny files: driver memory, first file, files/s, reruns,
    output files, DuckDB count; with --packed, Parquet and WebDataset vs loose files; with
    --s3-objects, the same on an S3 prefix of a local SeaweedFS."""
    from earmark.bench.scale_bench import bench_scale

    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        _fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    if s3_objects < 0:
        _fail(f"--s3-objects must be 0 or more, got {s3_objects}")
    if any(n < 1 for n in size_list) or (not size_list and not packed and not s3_objects):
        _fail("--sizes needs positive sizes (or pass --packed or --s3-objects to run only those)")
    if source not in ("manifest", "folder"):
        _fail(f"--source must be manifest or folder, got {source!r}")
    try:
        bench_scale(
            size_list, workdir, source=source, cpus=cpus, packed=packed,
            packed_clips=packed_clips, json_path=json_out, s3_objects=s3_objects,
        )  # fmt: skip
    except (RuntimeError, OSError, ValueError) as exc:
        _fail(str(exc), code=1)
