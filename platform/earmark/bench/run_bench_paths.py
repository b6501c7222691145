"""The three paths the run benchmark compares, each timed on the same files and model spec:
`earmark run` (`run_job`), the naive Ray Data recipe (one model call per file) and a plain
single-process loop; and the model spec they share (whisper tiny.en, or a tiny stand-in)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from earmark.bench.common import TreeMonitor
from earmark.models.result import as_task_text


class NaiveAnnotator:
    """The naive recipe's callable class: decode, window and annotate one file per model call."""

    def __init__(self, model: dict, tasks: list[dict]) -> None:
        from earmark.contracts import ModelSpec, TaskRequest
        from earmark.models.registry import load_model

        self.model = load_model(ModelSpec.model_validate(model))
        self.tasks = [TaskRequest(**t) for t in tasks]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from earmark.audio.decode import decode_audio
        from earmark.audio.segment import make_windows

        out: dict[str, list] = {"path": [], "duration_s": [], "text": []}
        for path, data in zip(batch["path"], batch["bytes"], strict=True):
            audio = decode_audio(bytes(data), what=str(path))
            windows = make_windows(str(path), audio.samples, type(self.model))
            texts = self.model.annotate(windows, self.tasks)  # once per file
            out["path"].append(str(path))
            out["duration_s"].append(audio.duration_s)
            out["text"].append(
                " ".join(as_task_text(t.get(self.tasks[0].name)).text for t in texts)
            )
        return out


def model_spec(family: str, work: Path, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    if family == "whisper":
        return {
            "family": "whisper",
            "checkpoint": "tiny.en",
            "device": "cpu",
            "batch_size": batch_size,
        }
    from earmark.testing.tiny import build_tiny_checkpoint

    ckpt = work / f"tiny_{family}"
    if not (ckpt / "config.json").exists():
        build_tiny_checkpoint(family, ckpt)
    return {
        "family": family,
        "checkpoint": str(ckpt),
        "device": "cpu",
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
    }


def run_earmark(
    source: Path, out: Path, model: dict, tasks: str, actors: int, actor_cpus: float, fpb: int
) -> tuple[Any, TreeMonitor]:
    from earmark.batch.runner import run_job
    from earmark.contracts import JobSpec

    shutil.rmtree(out, ignore_errors=True)  # a kept workdir must not resume an old output
    spec = JobSpec(
        source=str(source),
        output=str(out),
        tasks=tasks,
        model=model,
        resources={
            "min_actors": actors,
            "max_actors": actors,
            "annotator_num_cpus": actor_cpus,
            "files_per_batch": fpb,
        },
    )
    with TreeMonitor() as mem:
        summary = run_job(spec, progress=False)
    if summary.files_error:
        raise RuntimeError(
            f"earmark run gave {summary.files_error} error rows: {summary.errors_by_kind}"
        )
    return summary, mem


def run_naive(
    files: list[Path], out: Path, model: dict, tasks: str, actors: int, actor_cpus: float, fpb: int
) -> tuple[float, float, TreeMonitor]:
    """(audio s, wall s, monitor) of the naive Ray Data recipe, Parquet output included."""
    import pyarrow.parquet as pq
    import ray.data

    from earmark.contracts import parse_tasks

    shutil.rmtree(out, ignore_errors=True)
    ctx = ray.data.DataContext()  # Ray Data's defaults, not the settings earmark's run left
    ctx.enable_progress_bars = False
    t0 = time.perf_counter()
    with TreeMonitor() as mon, ray.data.DataContext.current(ctx):
        ds = ray.data.read_binary_files([str(f) for f in files], include_paths=True)
        ds = ds.map_batches(
            NaiveAnnotator,
            fn_constructor_args=(model, [t.model_dump() for t in parse_tasks(tasks)]),
            batch_size=fpb,
            compute=ray.data.ActorPoolStrategy(min_size=actors, max_size=actors),
            num_cpus=actor_cpus,
        )
        ds.write_parquet(str(out))
    wall = time.perf_counter() - t0
    table_ = pq.read_table(str(out), columns=["duration_s"])
    if table_.num_rows != len(files):
        raise RuntimeError(f"naive recipe wrote {table_.num_rows} rows for {len(files)} files")
    return float(sum(table_.column("duration_s").to_pylist())), wall, mon


def run_loop(files: list[Path], model: dict, tasks: str) -> tuple[float, float, float]:
    """(audio s, wall s, CPU s): decode + annotate one file at a time in this process."""
    from earmark.audio.decode import decode_audio
    from earmark.audio.segment import make_windows
    from earmark.bench.model_bench import cpu_threads
    from earmark.contracts import ModelSpec, parse_tasks
    from earmark.models.registry import load_model

    with cpu_threads(1):  # like one Annotator actor: one thread
        m = load_model(ModelSpec.model_validate(model))
        task_list = parse_tasks(tasks)
        audio = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        for f in files:
            with open(f, "rb") as fh:
                dec = decode_audio(fh, what=str(f))
            m.annotate(make_windows(str(f), dec.samples, type(m)), task_list)
            audio += dec.duration_s
        return audio, time.perf_counter() - t0, time.process_time() - c0
