"""Does the plan fit the cluster's nodes, not only its totals? Pure functions over node lists.

Ray places an actor or a task on ONE node. A cluster of two 2-CPU nodes has 4 CPUs, yet no node
can hold an Annotator asking for 2.5, and two Annotators of 1.5 CPUs leave each node 0.5 CPU:
the 1-CPU decode tasks then wait forever, as on a single machine whose CPUs the actors took.
`node_plan_problem` finds these plans (and Annotators asking for a custom resource no node has)
from the alive nodes, so the job is refused with the numbers instead of hanging.

The Annotators are identical, so how many fit on a node is exact (the fewest of, per resource,
capacity over demand, rounded down); the decode task is tried on every node in turn.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from earmark.contracts import ActorResources, ResourceSpec

EPS = 1e-9  # 0.1 + 0.2 CPUs must fit in 0.3
# Ray's own resources; the rest of a node's resources are custom ones (`--resources`)
BUILTIN = ("CPU", "GPU", "memory", "object_store_memory")


@dataclass(frozen=True)
class NodeResources:
    """What one alive node offers (its totals, as `ray start` declared them)."""

    node_id: str
    address: str
    cpus: float
    gpus: float = 0.0
    custom: Mapping[str, float] = field(default_factory=dict)
    head: bool = False

    @property
    def label(self) -> str:
        return f"{self.node_id[:8]} ({self.address}{', head' if self.head else ''})"

    def amount(self, resource: str) -> float:
        if resource == "CPU":
            return self.cpus
        if resource == "GPU":
            return self.gpus
        return self.custom.get(resource, 0.0)

    def shape(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU")
        parts += [f"{v:g} {k}" for k, v in sorted(self.custom.items())]
        return ", ".join(parts)


def from_ray_nodes(entries: Iterable[Mapping[str, Any]]) -> list[NodeResources]:
    """The alive nodes of `ray.nodes()`; `node:*` entries are Ray's addressing, not resources."""
    nodes = []
    for e in entries:
        if not e.get("Alive"):
            continue
        res = e.get("Resources") or {}
        custom = {
            k: float(v) for k, v in res.items() if k not in BUILTIN and not k.startswith("node:")
        }
        nodes.append(
            NodeResources(
                node_id=str(e.get("NodeID", "")),
                address=str(e.get("NodeManagerAddress", "?")),
                cpus=float(res.get("CPU", 0.0)),
                gpus=float(res.get("GPU", 0.0)),
                custom=custom,
                head="node:__internal_head__" in res,
            )
        )
    return nodes


def annotator_demand(spec: ActorResources) -> dict[str, float]:
    """What one Annotator actor asks of its node (the resources `annotator_options` gives Ray)."""
    demand = {"CPU": spec.annotator_num_cpus, "GPU": spec.annotator_num_gpus}
    demand.update(spec.annotator_resources)
    return {k: v for k, v in demand.items() if v > 0}


def fit_count(node: NodeResources, demand: Mapping[str, float], spare_cpus: float = 0.0) -> float:
    """How many Annotators fit on `node` once `spare_cpus` are kept for a decode task."""
    counts = []
    for resource, need in demand.items():
        have = node.amount(resource) - (spare_cpus if resource == "CPU" else 0.0)
        counts.append(max(0, math.floor(have / need + EPS)) if have >= -EPS else 0)
    return min(counts) if counts else math.inf


def describe(nodes: Iterable[NodeResources]) -> str:
    """`2 nodes × 2 CPU; 1 node × 4 CPU, 1 GPU` (a big cluster stays one short line)."""
    shapes = Counter(n.shape() for n in nodes)
    order = sorted(shapes.items(), key=lambda sc: (-sc[1], sc[0]))  # not the order nodes joined
    return "; ".join(f"{c} node{'s' if c > 1 else ''} × {s}" for s, c in order)


def node_plan_problem(
    spec: ResourceSpec, nodes: list[NodeResources], *, with_model: bool = True
) -> str | None:
    """Why this plan cannot run on these nodes (None when it can): the numbers and the setting
    to change, in the style of `earmark.compute.resources.check_plan`."""
    if not nodes:
        return "the cluster has no alive node"
    have = describe(nodes)
    decode = spec.decode_num_cpus
    biggest = max(n.cpus for n in nodes)
    if decode > biggest + EPS:
        return (
            f"decode tasks ask for {decode:g} CPUs each but no node has that many (nodes: "
            f"{have}): lower resources.decode_num_cpus to {biggest:g} or add a larger node"
        )
    if not with_model:
        return None
    demand = annotator_demand(spec)
    fits = [fit_count(n, demand) for n in nodes]
    want = " + ".join(f"{v:g} {k}" for k, v in demand.items()) or "nothing"
    if not any(fits):
        hint = _lower_hint(demand, nodes)
        return (
            f"no single node can hold one Annotator, which asks for {want} (nodes: {have}): {hint}"
        )
    if sum(fits) < spec.min_actors:
        return (
            f"resources.min_actors={spec.min_actors} Annotators of {want} each do not fit on the "
            f"nodes ({have}): at most {sum(fits):g} do. Lower resources.min_actors to "
            f"{sum(fits):g} or add nodes."
        )
    for i, n in enumerate(nodes):
        if n.cpus + EPS < decode:
            continue
        others = sum(fits) - fits[i]
        if others + fit_count(n, demand, spare_cpus=decode) >= spec.min_actors:
            return None
    return (
        f"this plan cannot run on these nodes ({have}): once {spec.min_actors} Annotator(s) of "
        f"{want} are placed, no node keeps {decode:g} CPU for a decode task — the read/decode "
        "stage would never run and the job would hang. Lower resources.annotator_num_cpus or "
        "resources.min_actors, or add a node."
    )


def _lower_hint(demand: Mapping[str, float], nodes: list[NodeResources]) -> str:
    """Name the settings whose demand no node meets, with the most any node offers."""
    hints = []
    for resource, need in demand.items():
        most = max(n.amount(resource) for n in nodes)
        if most + EPS >= need:
            continue
        if resource == "CPU":
            hints.append(f"lower resources.annotator_num_cpus to {most:g} or less")
        elif resource == "GPU":
            hints.append(f"lower resources.annotator_num_gpus to {most:g} or less")
        elif most == 0:
            hints.append(
                f"no node offers the custom resource {resource!r} named in "
                "resources.annotator_resources: start the nodes meant for the Annotator with "
                f"`ray start --resources '{{\"{resource}\": 1}}'`, or remove it"
            )
        else:
            hints.append(f"lower resources.annotator_resources.{resource} to {most:g} or less")
    if not hints:  # each resource exists somewhere, never all of them on one node
        hints.append("no node has all of them at once; change the resources or add such a node")
    return "; ".join(hints) + ", or add a node that can."
