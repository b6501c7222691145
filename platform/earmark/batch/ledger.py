"""The job's attempt ledger as one Ray actor, and the synchronous facade the Annotators use.

The ledger must outlive the Annotator processes it judges (they exit on fatal failures), so it
is its own actor, pinned to the driver's node: a worker node that dies takes no attempt counts
with it. Each call is one small message; a block costs three (attempts, begin, succeed), next
to a model call of seconds.
"""

from __future__ import annotations

from typing import Any

from earmark.annotate.failures import AttemptLedger
from earmark.contracts import FailureSpec


class RemoteLedger:
    """Holds the actor handle; picklable, so Ray Data ships it to every Annotator."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def _get(self, ref: Any) -> Any:
        import ray

        return ray.get(ref)

    def actor_started(self, actor_id: str) -> None:
        self._get(self.handle.actor_started.remote(actor_id))

    def attempts(self, audio_ids: list[str]) -> dict[str, int]:
        return self._get(self.handle.attempts.remote(audio_ids))

    def may_quarantine(self, audio_id: str) -> str | None:
        return self._get(self.handle.may_quarantine.remote(audio_id))

    def begin(self, audio_ids: list[str]) -> int:
        return self._get(self.handle.begin.remote(audio_ids))

    def succeed(self, token: int) -> None:
        # waited for: a success lost with a process that exits right after would later be
        # counted as a crash of these files
        self._get(self.handle.succeed.remote(token))

    def fail(self, token: int, error: str) -> str:
        return self._get(self.handle.fail.remote(token, error))

    def stats(self) -> dict[str, Any]:
        return self._get(self.handle.stats.remote())


def start_ledger(spec: FailureSpec, what: str = "the model") -> RemoteLedger:
    """A fresh ledger for one run of a job, on this (the driver's) node."""
    import ray

    from earmark.compute.resources import on_this_node

    actor = ray.remote(AttemptLedger).options(
        num_cpus=0,
        max_restarts=0,  # its state is the point; a restarted empty ledger would mislead
        scheduling_strategy=on_this_node(),
    )
    return RemoteLedger(actor.remote(spec, what))
