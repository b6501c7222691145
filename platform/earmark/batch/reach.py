"""Before any work on a cluster of several nodes: can every node see the local paths the job
uses? Ray runs decode tasks and Annotators on any node; a local folder that only the driver's
node holds makes every file a `not_found` row (a job that "succeeds" with nothing done), and a
local output that only one node holds scatters shards on that node's disk, where the summary,
the next resume and the user never see them.

Object stores and shared filesystems pass: what decides is whether each node sees the same
bytes at the same path, so the check writes a probe file into the output folder from the
driver and asks one zero-CPU task pinned to each alive node to read it back, and to find a few
of the listed source files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

from earmark.contracts import JobError
from earmark.storage import Location

PROBE_PREFIX = ".earmark-probe-"  # hidden: Parquet readers and the sink skip it
PROBE_TIMEOUT_S = 60.0  # a node that cannot run a zero-CPU task in a minute is not usable
SOURCE_SAMPLES = 3  # listed files each node must find (first, middle, last)


def _what_node_sees(probe: str | None, token: str, sources: list[str]) -> dict[str, Any]:
    """Runs on one node: which of the driver's local paths it cannot see."""
    import ray

    problems = []
    if probe is not None:
        try:
            with open(probe) as f:
                if f.read() != token:
                    problems.append(f"output: {probe} holds other content than the driver wrote")
        except OSError as exc:
            problems.append(f"output: cannot read {probe} ({exc.strerror or exc})")
    problems += [f"source: {p} not found" for p in sources if not os.path.exists(p)]
    return {"node": ray.get_runtime_context().get_node_id(), "problems": problems}


def check_every_node_sees(out: Location, peek: Callable[[], list[dict[str, Any]]]) -> None:
    """Raise JobError naming the node and the fix when a node cannot see a local path. `peek`
    gives a few listed files (called only on a cluster of several nodes: listing costs)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    probe = out.join(f"{PROBE_PREFIX}{uuid.uuid4().hex}") if out.is_local else None
    sources = _local_samples(peek())
    if probe is None and not sources:
        return
    token = uuid.uuid4().hex
    if probe is not None:
        os.makedirs(out.path, exist_ok=True)
        with open(probe, "w") as f:
            f.write(token)
    task = ray.remote(_what_node_sees)
    try:
        refs = {
            n["NodeID"]: task.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
            ).remote(probe, token, sources)
            for n in nodes
        }
        try:
            answers = ray.get(list(refs.values()), timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise JobError(
                f"a cluster node did not answer a zero-CPU check within {PROBE_TIMEOUT_S:.0f} s;"
                " check `ray status` for dead or overloaded nodes"
            ) from None
    finally:
        if probe is not None and os.path.exists(probe):
            os.unlink(probe)
    addresses = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes}
    bad = [a for a in answers if a["problems"]]
    if not bad:
        return
    lines = [
        f"node {a['node'][:12]} ({addresses.get(a['node'], '?')}): {'; '.join(a['problems'])}"
        for a in bad
    ]
    raise JobError(
        "this job uses local paths that not every node of the cluster can see, so files would "
        "become not_found rows or shards would land on one node's disk:\n  "
        + "\n  ".join(lines)
        + "\nput source and output on a filesystem mounted at the same path on every node, or "
        "in an object store (s3://, gs://, ...)"
    )


def _local_samples(listed: list[dict[str, Any]]) -> list[str]:
    """A few listed local files (first, middle, last) that every node must find."""
    local = [r["uri"] for r in listed if not r.get("list_error") and r["uri"].startswith("file://")]
    if not local:
        return []
    picks = {0, len(local) // 2, len(local) - 1}
    return [local[i][len("file://") :] for i in sorted(picks)][:SOURCE_SAMPLES]
