"""The model deployment: the batch job's `Annotator`, loaded once per replica, behind
`@serve.batch`.

Requests arrive as prepared windows (the ingress decoded and cut them, as the decode tasks do in
a job). Concurrent requests are gathered into one batch (up to `max_batch_size`, waiting at most
`batch_wait_timeout_s`); requests asking the same tasks share model calls, so the windows of many
requests fill the model's batches exactly as the windows of many files do in a job. The model runs
in a worker thread: the replica's event loop keeps answering health checks meanwhile. Batch
settings come from `user_config` and can be changed live.

Why a gate in front of `@serve.batch`: Ray 2.60's batch loop forms the next batch as soon as its
wait timeout expires, even while the model is still busy with the previous one (only execution
waits for the model). Under steady load that cuts the queue into batches of 1–3 requests, each
closed 50 ms after its first arrival. Requests therefore wait at `idle` while a batch runs and
enter the batch queue together when it ends, so the next batch takes everything that queued
meanwhile (8 closed-loop clients, whisper tiny.en on CPU: a request's batch held 2.1 requests on
average without the gate, 6.2 with it).

Why the wait grows under load: when a call ends, the clients it answered send their next requests
through the ingress (decode, windows, features: tens of ms of CPU each), so they reach the replica
over a second or more. A 50 ms wait then closes the next batch on the first few, the rest queue
behind it, and the load splits into two half-full batches that alternate (32 closed-loop clients
on the eureka stand-in: calls of 6 and 25 requests). So after a call that held more than one
request the next wait is `load_wait_fraction` of that call's duration (capped by
`max_load_wait_s`); a lone request (light load) keeps `batch_wait_timeout_s`, so single-client
latency is unchanged.

With `model.engine: vllm` there is neither gate nor static batch: each request goes to the
engine at once, in its own thread, and vLLM schedules the windows of all requests in flight
together (continuous batching): a request that arrives while others decode joins the running
batch at the next engine step instead of waiting for a batch to fill or to finish.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ray import serve

from earmark.annotate.annotator import Annotator
from earmark.annotate.failures import FatalModelError, describe
from earmark.audio.windows import Window
from earmark.models.base import ModelInputError

log = logging.getLogger(__name__)

CONTINUOUS_THREADS = 512  # engine vllm: requests a replica can have in its engine at once
FATAL_AFTER_FAILURES = 3  # consecutive failed batches (not fatal, not input) before unhealthy
UNAVAILABLE = "unavailable"  # result kind the ingress answers with 503

Item = tuple[list[Window], list[dict[str, Any]]]  # (windows of one request, task dicts)


def next_batch_wait(requests: int, call_s: float, base_s: float, fraction: float, cap_s: float):
    """Wait for the batch after a model call of `requests` requests that took `call_s`."""
    if requests <= 1 or fraction <= 0:
        return base_s
    return max(base_s, min(cap_s, fraction * call_s))


def run_items(annotator: Annotator, items: list[Item]) -> list[dict[str, Any]]:
    """One result per request: {"fields": row fields} or {"error", "kind"}; never raises for
    a bad request (FatalModelError when the model failed). Requests with the same tasks share
    model calls."""
    from earmark.contracts import TaskRequest

    results: list[dict[str, Any]] = [{} for _ in items]
    groups: dict[tuple, list[int]] = {}
    for i, (_, tasks) in enumerate(items):
        key = tuple((t["name"], t.get("prompt")) for t in tasks)
        groups.setdefault(key, []).append(i)
    for idx in groups.values():
        tasks = [TaskRequest(**t) for t in items[idx[0]][1]]
        outcomes = annotator.annotate_files([items[i][0] for i in idx], tasks)
        for i, o in zip(idx, outcomes, strict=True):
            if o.error is not None:
                results[i] = {"error": o.error, "kind": "model_error"}
            else:
                results[i] = {"fields": {**o.fields, "infer_s": o.infer_s}}
    return results


@serve.deployment(name="Annotator")
class AnnotatorDeployment:
    """One Annotator per replica; `annotate` is batched across concurrent requests."""

    def __init__(self, model: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
        self.annotator = Annotator(model, tasks)
        self.batch_sizes: Counter[int] = Counter()
        self.failures = 0  # consecutive batches that raised
        self.broken = ""  # why the model is unusable (a fatal failure); set once, never cleared
        self.idle = asyncio.Event()  # set while no batch runs (see the module docstring)
        self.idle.set()
        self.pid = os.getpid()
        self.continuous = self.annotator.spec.engine == "vllm"  # the engine batches requests
        # continuous batching: a thread per request in flight, each waiting on the engine (the
        # loop's default pool, min(32, cores + 4) threads, would cap what the engine sees)
        self.pool = ThreadPoolExecutor(CONTINUOUS_THREADS) if self.continuous else None
        self.base_wait_s, self.load_wait_fraction, self.max_load_wait_s = 0.05, 0.0, 0.0
        log.info("Annotator replica ready: %s (pid %d)", self.annotator.model.name, self.pid)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """user_config (`BatchingSpec` fields); applied live."""
        if "max_batch_size" in config:
            self._batched.set_max_batch_size(int(config["max_batch_size"]))
        self.base_wait_s = float(config.get("batch_wait_timeout_s", self.base_wait_s))
        self.load_wait_fraction = float(config.get("load_wait_fraction", self.load_wait_fraction))
        self.max_load_wait_s = float(config.get("max_load_wait_s", self.max_load_wait_s))
        self._batched.set_batch_wait_timeout_s(self.base_wait_s)

    async def annotate(self, windows: list[Window], tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Row fields for one request's windows, plus the size of the batch it rode in."""
        if self.continuous:  # straight to the engine, which batches concurrent requests
            (result,) = await self._run([(windows, tasks)])
            return result
        await self.idle.wait()
        return await self._batched((windows, tasks))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05)
    async def _batched(self, items: list[Item]) -> list[dict[str, Any]]:
        self.idle.clear()
        t0 = time.perf_counter()
        try:
            return await self._run(items)
        finally:
            wait = next_batch_wait(
                len(items),
                time.perf_counter() - t0,
                self.base_wait_s,
                self.load_wait_fraction,
                self.max_load_wait_s,
            )
            self._batched.set_batch_wait_timeout_s(wait)
            self.idle.set()

    async def _run(self, items: list[Item]) -> list[dict[str, Any]]:
        """Results of one model call over `items`, failures turned into per-request errors."""
        n = len(items)
        self.batch_sizes[n] += 1
        if self.broken:  # answered at once; check_health has Serve replace this replica
            return [self._unavailable() for _ in items]
        try:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.pool, run_items, self.annotator, items)
            self.failures = 0
        except ModelInputError as exc:  # not the replica's fault
            results = [{"error": str(exc), "kind": "model_error"}] * n
        except FatalModelError as exc:  # the device or model failed: no row, a new replica
            self.broken = describe(exc)
            log.error("fatal model failure; this replica is unhealthy from now on: %s", exc)
            results = [self._unavailable() for _ in items]
        except Exception as exc:
            self.failures += 1
            log.exception("batch of %d requests failed", n)
            results = [{"error": f"{type(exc).__name__}: {exc}", "kind": "internal"}] * n
        return [{**r, "batch_size": n} for r in results]

    def _unavailable(self) -> dict[str, Any]:
        return {
            "error": f"the model replica failed ({self.broken}); it is being replaced, retry",
            "kind": UNAVAILABLE,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "model": self.annotator.model.name,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "max_batch_size": self._batched._get_max_batch_size(),
            "batch_wait_timeout_s": self._batched._get_batch_wait_timeout_s(),
            "base_wait_s": self.base_wait_s,
            "load_wait_fraction": self.load_wait_fraction,
            "threads": self.threads(),
            "engine": self.engine_stats(),
        }

    def engine_stats(self) -> dict[str, Any] | None:
        """What the vLLM engine did (encoder items, most requests at once); None on hf."""
        proc = getattr(self.annotator.model, "proc", None)
        return proc.stats() if proc is not None else None

    def threads(self) -> dict[str, Any]:
        """CPU thread settings in this replica (Ray sets OMP_NUM_THREADS from num_cpus):
        more threads than the replica's CPUs oversubscribe the cores other replicas use."""
        import sys

        torch = sys.modules.get("torch")
        return {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.get_num_threads() if torch is not None else None,
            "ctranslate2": getattr(self.annotator.model, "cpu_threads", None),
        }

    def ping(self) -> str:
        return self.annotator.model.name

    def check_health(self) -> None:
        """Serve calls this periodically; raising makes Serve replace the replica."""
        if self.broken:
            raise RuntimeError(f"the model failed fatally: {self.broken}")
        if self.failures >= FATAL_AFTER_FAILURES:
            raise RuntimeError(
                f"{self.failures} consecutive batches failed; the model is presumed broken"
            )

    def __del__(self) -> None:
        # graceful shutdown: Serve drained in-flight requests already; free the weights now so
        # a replacement replica on the same GPU finds the memory free
        self.annotator = None  # type: ignore[assignment]
        gc.collect()
        try:
            import sys

            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:
            pass
