"""Resources as plain data → Ray options, in one place for batch and Serve; plan checks.

On a small machine an actor pool that takes every CPU leaves the decode tasks nothing to run on:
Ray Data waits forever for a CPU the actors hold. `check_plan` refuses such a plan before anything
starts, with the numbers and the fix.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from earmark.compute.address import resolve_run_address
from earmark.compute.placement import NodeResources, from_ray_nodes, node_plan_problem
from earmark.contracts import ActorResources, JobError, ResourceSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSize:
    cpus: float
    gpus: float
    # the alive nodes, when known: the plan must also fit node by node (earmark.placement)
    nodes: tuple[NodeResources, ...] = ()


def local_cluster_size(spec: ActorResources) -> ClusterSize:
    """Size of the embedded Ray: the machine's CPUs (or the spec's) and visible GPUs."""
    cpus = spec.cluster_cpus or os.cpu_count() or 1
    gpus = visible_gpus()
    node = NodeResources("local", "this machine", float(cpus), float(gpus), head=True)
    return ClusterSize(float(cpus), float(gpus), (node,))


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch (≈900 MB, seconds) in the
    driver: the driver's entries under /proc (Linux), narrowed by CUDA_VISIBLE_DEVICES."""
    try:
        found = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    return min(found, len(ids))


def connected_size() -> ClusterSize:
    """Totals and alive nodes of the cluster this process is connected to."""
    import ray

    res = ray.cluster_resources()
    nodes = tuple(from_ray_nodes(ray.nodes()))
    return ClusterSize(res.get("CPU", 0.0), res.get("GPU", 0.0), nodes)


def annotator_options(spec: ActorResources) -> dict[str, Any]:
    """Per-actor Ray options (used for the batch pool and for Serve replicas)."""
    options: dict[str, Any] = {
        "num_cpus": spec.annotator_num_cpus,
        "num_gpus": spec.annotator_num_gpus,
    }
    if spec.annotator_resources:  # custom resources: only nodes that declare them qualify
        options["resources"] = dict(spec.annotator_resources)
    return options


def check_plan(spec: ResourceSpec, size: ClusterSize, *, with_model: bool = True) -> None:
    """Refuse a plan that cannot be scheduled on this cluster (it would hang, not fail)."""
    if spec.decode_num_cpus > size.cpus:
        raise JobError(
            f"decode tasks ask for {spec.decode_num_cpus} CPUs each but the cluster has "
            f"{size.cpus:g}: lower resources.decode_num_cpus"
        )
    if not with_model:
        _check_nodes(spec, size, with_model=False)
        return
    actor_cpus = spec.annotator_num_cpus * spec.min_actors
    actor_gpus = spec.annotator_num_gpus * spec.min_actors
    if actor_gpus > size.gpus:
        raise JobError(
            f"{spec.min_actors} Annotator actor(s) × {spec.annotator_num_gpus:g} GPU need "
            f"{actor_gpus:g} GPUs but the cluster has {size.gpus:g}: lower resources.min_actors "
            "or resources.annotator_num_gpus (0 runs the model on CPU)"
        )
    free = size.cpus - actor_cpus
    if free < spec.decode_num_cpus:
        raise JobError(
            f"this plan cannot run: {spec.min_actors} Annotator actor(s) × "
            f"{spec.annotator_num_cpus:g} CPU take {actor_cpus:g} of the cluster's {size.cpus:g} "
            f"CPUs, leaving {free:g} for decode tasks that need {spec.decode_num_cpus:g} each — "
            "the read/decode stage would never run and the job would hang. Lower "
            "resources.min_actors or resources.annotator_num_cpus, or add CPUs."
        )
    most_cpus = spec.annotator_num_cpus * spec.max_actors
    if size.cpus - most_cpus < spec.decode_num_cpus and spec.annotator_num_cpus > 0:
        raise JobError(
            f"resources.max_actors={spec.max_actors} × {spec.annotator_num_cpus:g} CPU could take "
            f"all {size.cpus:g} CPUs and starve the decode tasks; lower resources.max_actors to "
            f"{max(1, int((size.cpus - spec.decode_num_cpus) // spec.annotator_num_cpus))}"
        )
    if spec.annotator_num_gpus > 0 and spec.annotator_num_gpus * spec.max_actors > size.gpus:
        raise JobError(
            f"resources.max_actors={spec.max_actors} × {spec.annotator_num_gpus:g} GPU exceeds "
            f"the cluster's {size.gpus:g} GPUs; lower resources.max_actors"
        )
    _check_nodes(spec, size, with_model=True)


def _check_nodes(spec: ResourceSpec, size: ClusterSize, *, with_model: bool) -> None:
    """The same plan, node by node: Ray places each actor and task on one node."""
    if size.nodes and (problem := node_plan_problem(spec, list(size.nodes), with_model=with_model)):
        raise JobError(problem)


CONNECT_TIMEOUT_S = 10.0  # Ray itself retries an unreachable GCS for minutes, silently


def check_reachable(address: str) -> None:
    """Refuse a `host:port` (or, for Serve, `ray://host:port`) cluster address that does not
    accept a TCP connection, with the reason, instead of letting ray.init retry it without end."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise JobError(
            f"Ray address {address!r} must be host:port (the head's GCS, e.g. HEAD:6379) or auto"
        )
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise JobError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check the "
            "address and that the head node is running"
        ) from None


def init_ray(address: str | None, spec: ActorResources) -> ClusterSize:
    """Connect to a cluster, or start an embedded local Ray sized to the machine."""
    import ray

    if ray.is_initialized():
        return connected_size()
    # a Jobs API RAY_ADDRESS (exported for `earmark submit`) is dropped here, with a note
    address = resolve_run_address(address, note=log.warning, client_ok=True)
    address = address or os.environ.get("RAY_ADDRESS") or None  # inside a Ray job: its cluster
    env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "0")}}
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        env = None  # a submitted job already carries its runtime env; Ray refuses an overlap
    if address:
        check_reachable(address)
        ray.init(address=address, runtime_env=env, log_to_driver=False)
        return connected_size()
    size = local_cluster_size(spec)
    ray.init(
        num_cpus=int(size.cpus),
        num_gpus=int(size.gpus),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,  # the embedded cluster's start-up notes are noise to users
        runtime_env=env,
    )
    return size


def on_this_node() -> Any:
    """A scheduling strategy that keeps a job's bookkeeping (its ledgers, tally and output index)
    on the driver's node: a worker node that dies must take decoding and Annotators with it,
    never the job's state (the driver then said 'actor unavailable' instead of the node loss)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
