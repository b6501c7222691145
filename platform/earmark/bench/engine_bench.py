"""Engine benchmark (`earmark bench engine --model FAMILY[:CKPT]`): the same windows through the
transformers engine (hf) and the vLLM engine, side by side in one run.

Per engine: audio seconds per wall second, generated tokens per second (each engine's output
text re-tokenised with the checkpoint's tokenizer, so both are counted alike), the encoder's
padding (hf pads a batch to its longest window; vLLM pages per row and pads nothing), and peak
memory of the process that holds the model (RSS on CPU; on a GPU the device memory that
process holds, from nvidia-smi). For vLLM also what "encode once, ask many" cost it: encoder
items, prompt tokens and prefix-cache hits per window.

The engines alternate (hf, vllm, hf, vllm, ...) and each figure is the median of `repeats`, so
a slow spell of a shared machine hits both; each repeat cuts its windows from other audio, so
vLLM's prefix and encoder caches never serve a window seen in an earlier repeat. Without CKPT
the tiny random-weight checkpoint of the family is built (figures labelled CPU/tiny: they show
the machinery, not a 7B model's speed).
"""

from __future__ import annotations

import gc
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from earmark.bench.common import conditions, format_conditions, ratio, say, table, workspace
from earmark.bench.model_bench import make_windows, window_durations

ENGINE_FAMILIES = ("midashenglm", "moss")
SAMPLE_S = 0.1  # memory sampling interval (s)


class PeakMemory:
    """Peak memory of one process while a block runs: RSS, or its GPU memory when it has some."""

    def __init__(self, pid: int) -> None:
        self.pid, self.rss_mib, self.gpu_mib = pid, 0.0, 0.0
        self._stop = threading.Event()

    def sample(self) -> None:
        import psutil

        try:
            rss = psutil.Process(self.pid).memory_info().rss / 2**20
            self.rss_mib = max(self.rss_mib, rss)
        except psutil.Error:
            pass
        self.gpu_mib = max(self.gpu_mib, gpu_mib_of(self.pid))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def gpu_mib_of(pid: int) -> float:
    """GPU memory (MiB) process `pid` holds, per nvidia-smi; 0 without a GPU."""
    if shutil.which("nvidia-smi") is None:
        return 0.0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return 0.0
    for line in out.splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return 0.0


def tiny_checkpoint(family: str, folder: Path) -> Path:
    """The family's tiny checkpoint that both engines load (built once in `folder`)."""
    path = folder / f"tiny-{family}-vllm"
    if (path / "config.json").exists():
        return path
    if family == "moss":
        from earmark.testing.tiny_moss import build_tiny_moss

        return build_tiny_moss(path, vllm_ready=True, init_std=0.5)
    from earmark.testing.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(family, path)  # every tiny MiDashengLM loads in vLLM


def load(family: str, engine: str, ckpt: str, max_new_tokens: int) -> Any:
    from earmark.models.registry import model_class

    cls = model_class(family, engine)
    return cls(ckpt, max_new_tokens=max_new_tokens)


def run_once(model: Any, windows: list[Any], tasks: list[Any], batch: int) -> tuple[float, list]:
    """Wall seconds to annotate `windows` in calls of `batch` windows (length-sorted, as the
    Annotator buckets them), and the outputs."""
    from earmark.annotate.merge import bucket_windows

    out: list[Any] = [None] * len(windows)
    if getattr(model, "concurrent_calls", False):  # as the Annotator calls it: all at once
        batch = len(windows)
    t0 = time.perf_counter()
    for bucket in bucket_windows(windows, batch):
        for i, r in zip(bucket, model.annotate([windows[i] for i in bucket], tasks), strict=True):
            out[i] = r
    return time.perf_counter() - t0, out


def bench_engine(
    model: str = "moss",
    windows: int = 32,
    tasks: str = "asr,caption,tags",
    batch_size: int = 8,
    max_new_tokens: int = 32,
    repeats: int = 3,
    workdir: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Figures per engine (see the module doc); prints a table with the conditions."""
    from earmark.bench.corpus import demo_clips, synth_signal
    from earmark.contracts import parse_tasks
    from earmark.models.registry import model_class

    family, _, ckpt = model.partition(":")
    if family not in ENGINE_FAMILIES:
        raise ValueError(f"engine benchmark: family {family!r} has no vLLM engine; use moss or "
                         "midashenglm")  # fmt: skip
    task_list = parse_tasks(tasks)
    durations = window_durations(windows, seed)
    rng = np.random.default_rng(seed)
    with workspace(workdir, "earmark-engine-") as folder:
        ckpt = ckpt or str(tiny_checkpoint(family, folder))
        audio = synth_signal(demo_clips(), sum(durations) + 1, 16_000, rng)
        models, wins = {}, {}
        for engine in ("hf", "vllm"):
            say(f"loading {family} on {engine} ...")
            t0 = time.perf_counter()
            models[engine] = load(family, engine, ckpt, max_new_tokens)
            say(f"  {time.perf_counter() - t0:.1f} s")
            # new audio every repeat (an archive does not repeat itself; vLLM's caches would
            # serve a repeat), the same audio for both engines within a repeat
            wins[engine] = [
                make_windows(model_class(family, engine), durations, np.roll(audio, 7919 * k))
                for k in range(repeats)
            ]
            warm = make_windows(model_class(family, engine), [2.0], audio[::-1].copy())
            run_once(models[engine], warm, task_list, 1)  # not one of the measured windows
        tokenizer = models["vllm"].tokenizer
        times: dict[str, list[float]] = {"hf": [], "vllm": []}
        peaks: dict[str, PeakMemory] = {}
        outs: dict[str, list] = {}
        v = models["vllm"]
        first = (v.proc.stats(), v.prompt_tokens, v.cached_tokens)
        for k in range(repeats):
            if k == 1:  # what the first pass over unseen audio cost the engine
                first = (v.proc.stats(), v.prompt_tokens, v.cached_tokens, first)
            for engine in ("hf", "vllm"):
                m = models[engine]
                pid = m.proc.proc.pid if engine == "vllm" else os.getpid()
                with PeakMemory(pid) as peak:
                    s, outs[engine] = run_once(m, wins[engine][k], task_list, batch_size)
                times[engine].append(s)
                old = peaks.get(engine)
                if old is None or peak.rss_mib > old.rss_mib:
                    peaks[engine] = peak
        audio_s = sum(durations)
        results: dict[str, Any] = {}
        for engine in ("hf", "vllm"):
            wall = statistics.median(times[engine])
            texts = [r[t.name] for r in outs[engine] for t in task_list]
            n_tok = sum(len(tokenizer.encode(getattr(x, "text", x))) for x in texts)
            stats = models[engine].stats
            results[engine] = {
                "wall_s": wall,
                "audio_s_per_s": audio_s / wall,
                "tokens_per_s": n_tok / wall,
                "padding": stats.padding_fraction,
                "peak_rss_mib": peaks[engine].rss_mib,
                "peak_gpu_mib": peaks[engine].gpu_mib,
            }
        if len(first) == 3:  # one repeat: the first pass is the whole run
            first = (v.proc.stats(), v.prompt_tokens, v.cached_tokens, first)
        (end, p1, c1, (start, p0, c0)) = first
        n = len(durations)
        results["vllm"] |= {
            "encoder_items_per_window": (end["encoder_items"] - start["encoder_items"]) / n,
            "prompt_tokens_per_window": (p1 - p0) / n,
            "cached_tokens_per_window": (c1 - c0) / n,
            "max_in_flight": end["max_in_flight"],
        }
        same = sum(
            getattr(a[t.name], "text", None) == getattr(b[t.name], "text", None)
            for a, b in zip(outs["hf"], outs["vllm"], strict=True)
            for t in task_list
        )
        results["same_text"] = f"{same}/{len(outs['hf']) * len(task_list)}"
        results["vllm_over_hf"] = ratio(
            statistics.median(times["hf"]), statistics.median(times["vllm"])
        )
        v.close()
        del models
        gc.collect()
    _report(results, family, ckpt, windows, audio_s, tasks, batch_size, max_new_tokens, repeats)
    return results


def _report(res, family, ckpt, windows, audio_s, tasks, batch, max_new, repeats) -> None:
    rows = [
        [
            e,
            res[e]["audio_s_per_s"],
            res[e]["tokens_per_s"],
            f"{100 * res[e]['padding']:.1f} %",
            res[e]["peak_rss_mib"],
            res[e]["peak_gpu_mib"] or "n/a",
        ]
        for e in ("hf", "vllm")
    ]
    headers = ["engine", "audio s/s", "tokens/s", "encoder padding", "peak RSS MiB", "GPU MiB"]
    print(table(headers, rows))
    v = res["vllm"]
    print(
        f"vLLM per window ({len(tasks.split(','))} tasks, first pass over the windows): "
        f"{v['encoder_items_per_window']:.2f} encoder items, "
        f"{v['prompt_tokens_per_window']:.0f} prompt tokens of which "
        f"{v['cached_tokens_per_window']:.0f} from the prefix cache; "
        f"most rows in flight {v['max_in_flight']}"
    )
    print(f"speed-up vllm/hf: {res['vllm_over_hf']:.2f}x; same text: {res['same_text']}")
    print(
        format_conditions(
            conditions(
                model=f"{family}:{ckpt}",
                windows=windows,
                audio_s=round(audio_s, 1),
                tasks=tasks,
                batch_size=batch,
                max_new_tokens=max_new,
                repeats=repeats,
            )
        )
    )
