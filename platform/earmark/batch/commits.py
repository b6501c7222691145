"""The output on the Ray side: what it holds before a run, right-sized files while the job
runs (the driver folds staged batches into parts), one row per file at the end.

Each batch an Annotator (or a scan's decode task) finishes is staged as one small file and
reported to the driver with its size (sink.shards.write_rows). Once the reported files reach
the target size, one fold task (sink.commit.fold: journaled, exactly once) turns them into a
committed part, while the job goes on. Only reported files are folded while the job runs: a
batch whose result reached the driver will not be retried, so its staged file is final. At the
end every staged file left is folded, and a killed run's staged files are folded by the next
run before it reads what the output holds.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from earmark.sink.commit import FoldResult, fold, fold_staging, plan_folds, recover
from earmark.sink.index import scan_output
from earmark.sink.repair import repair_output
from earmark.storage import Location

MB = 1 << 20


def _fold_remote() -> Any:
    import ray

    return ray.remote(fold).options(num_cpus=0, max_retries=3)


class Committer:
    """Tracks staged files reported by finished batches; folds them by the target size."""

    def __init__(self, out: Location, target_mb: float) -> None:
        self.out = out
        self.target = int(target_mb * MB)
        self.pending: dict[str, int] = {}
        self.inflight: Any = None
        self.parts = 0

    def add(self, batch: pa.Table) -> None:
        for path, size in zip(
            batch.column("_staged").to_pylist(),
            batch.column("_staged_bytes").to_pylist(),
            strict=True,
        ):
            if path:
                self.pending[path] = size
        if sum(self.pending.values()) < self.target or not self._idle():
            return
        groups = plan_folds(list(self.pending.items()), self.target, final=False)
        if groups:
            sources = groups[0]
            for s in sources:
                del self.pending[s]
            self.inflight = _fold_remote().remote(self.out, sources)

    def _idle(self) -> bool:
        import ray

        if self.inflight is None:
            return True
        ready, _ = ray.wait([self.inflight], timeout=0)
        if ready:
            self._collect()
        return self.inflight is None

    def _collect(self) -> None:
        import ray

        result: FoldResult = ray.get(self.inflight)
        self.inflight = None
        self.parts += result.part is not None

    def finish(self) -> None:
        """Wait for the fold in flight, then fold every staged file left (in a task)."""
        import ray

        if self.inflight is not None:
            self._collect()
        task = ray.remote(fold_staging).options(num_cpus=0, max_retries=3)
        results = ray.get(task.remote(self.out, self.target))
        self.parts += sum(r.part is not None for r in results)
        self.pending.clear()


def settle_output(out: Location, target_mb: float) -> int:
    """Before a run: finish any fold a killed run left, then fold its staged files (they hold
    rows the output has, so resume must count them). Returns the folds found unfinished."""
    found = recover(out)
    fold_staging(out, int(target_mb * MB))
    return found


def start_index(out: Location, retry_errors: frozenset[str] | None) -> dict[str, Any]:
    """What the output holds, read by a task (sink.index.scan_output): the done and retry id
    sets stay in the object store for the listing tasks; the driver gets only counts."""
    import ray

    done, retry, info = _scan_task().remote(out, retry_errors)
    return {"done": done, "retry": retry, "info": ray.get(info)}


def _scan_task() -> Any:
    import ray

    def scan(out: Location, kinds: frozenset[str] | None):
        index = scan_output(out, kinds)
        info = {
            "rows": index.rows,
            "ok": index.ok,
            "drop": sum(len(v) for v in index.drop.values()),
            "duplicates": index.duplicates,
            "superseded": index.superseded,
        }
        return index.done, index.retry, info

    from earmark.compute.resources import on_this_node

    # on the driver's node: the id sets it returns live there, not on a worker that may die
    return ray.remote(scan).options(num_cpus=0, num_returns=3, scheduling_strategy=on_this_node())


def finish_output(out: Location, before: dict[str, Any], wrote: bool) -> dict[str, int]:
    """One row per file at the end of a run: rows to drop (sink.index) are folded away in a
    task. Nothing written and nothing to drop: the output is as the start found it."""
    import ray

    if not wrote and not before["drop"]:
        return {**before, "duplicates": 0, "superseded": 0}
    return ray.get(ray.remote(repair_output).options(num_cpus=0).remote(out))
