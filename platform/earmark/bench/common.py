"""Shared pieces of the benchmarks: machine conditions, peak memory of a process tree, tables.

Every benchmark prints its figures next to the conditions they were taken under (cores, CPU
model, load average), because on a shared machine the load average explains most surprises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

RSS_SAMPLE_S = 0.1  # s between memory samples: catches peaks of multi-second stages
MIB = 1 << 20  # bytes per MiB


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def conditions(**extra: Any) -> dict[str, Any]:
    """What the figures depend on: cores, CPU model, load, and the benchmark's own settings."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": usable_cores(),
        "cpu_model": cpu_model(),
        "load_avg_1m": round(load[0], 2),
        "python": platform.python_version(),
        **extra,
    }


def format_conditions(cond: dict[str, Any]) -> str:
    return "Conditions: " + ", ".join(f"{k}={v}" for k, v in cond.items())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (pastes into the README as is); floats get 3 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    text = [[cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(list(headers)), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(out + [line(r) for r in text])


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


class TreeMonitor:
    """Peak summed RSS and total CPU time of this process and all its descendants, sampled in a
    thread.

    With an embedded Ray the raylet, the GCS and every worker descend from the driver, so the
    tree is the whole job. Summed RSS counts pages shared between processes (libraries, the
    object store) once per process: an upper bound, and a stable one, which is what a flatness
    check needs. CPU seconds (user + system, each process's last sample minus its first) measure
    the work done whatever else runs on the machine; a process that exits loses at most one
    sampling interval of it.
    """

    def __init__(self, interval_s: float = RSS_SAMPLE_S) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.peak_single_bytes = 0
        self.peak_processes = 0
        self._cpu_first: dict[tuple[int, float], float] = {}
        self._cpu_last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        import psutil

        root = psutil.Process(os.getpid())
        total, single, n = 0, 0, 0
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = [root]
        for p in procs:
            try:
                with p.oneshot():
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    key = (p.pid, p.create_time())  # a reused pid is another process
            except psutil.Error:  # exited between listing and reading
                continue
            total += rss
            single = max(single, rss)
            n += 1
            cpu = t.user + t.system
            # a process born after the first sample started from 0 CPU seconds
            self._cpu_first.setdefault(key, cpu if self._thread is None else 0.0)
            self._cpu_last[key] = cpu
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_single_bytes = max(self.peak_single_bytes, single)
        self.peak_processes = max(self.peak_processes, n)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMonitor:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB

    @property
    def peak_single_mib(self) -> float:
        return self.peak_single_bytes / MIB

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu_last[k] - self._cpu_first[k] for k in self._cpu_last)


@contextlib.contextmanager
def workspace(workdir: str | os.PathLike[str] | None, prefix: str) -> Iterator[Path]:
    """`workdir` (created, kept: generated corpora are reused) or a temp dir removed after."""
    if workdir is not None:
        path = Path(workdir).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ray_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def start_ray(cluster_cpus: int | None = None) -> tuple[float, bool]:
    """Reuse a running Ray, or start the embedded one `earmark run` would; (CPUs, started)."""
    import ray

    from earmark.compute.resources import init_ray
    from earmark.contracts import ResourceSpec

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the tables are the output
    if ray.is_initialized():
        return ray_cpus(), False
    size = init_ray(None, ResourceSpec(cluster_cpus=cluster_cpus))
    return size.cpus, True


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)
