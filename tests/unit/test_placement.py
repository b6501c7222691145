"""The plan checked node by node: Ray places each actor and each task on one node."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from earmark.compute.placement import (
    NodeResources,
    describe,
    fit_count,
    from_ray_nodes,
    node_plan_problem,
)
from earmark.compute.resources import ClusterSize, annotator_options, check_plan, local_cluster_size
from earmark.contracts import JobError, ResourceSpec


def nodes(*cpus: float, gpus: float = 0.0, **custom: float) -> list[NodeResources]:
    return [
        NodeResources(f"node{i:04d}xxxx", f"10.0.0.{i}", c, gpus, custom)
        for i, c in enumerate(cpus)
    ]


def spec(**kw) -> ResourceSpec:
    return ResourceSpec(**kw)


def test_an_annotator_larger_than_every_node_is_refused_though_the_totals_fit():
    two = nodes(2, 2)
    res = spec(annotator_num_cpus=2.5)
    check_plan(res, ClusterSize(4, 0))  # the totals alone would let it hang
    problem = node_plan_problem(res, two)
    assert problem is not None
    assert "no single node can hold one Annotator, which asks for 2.5 CPU" in problem
    assert "(nodes: 2 nodes × 2 CPU)" in problem
    assert "lower resources.annotator_num_cpus to 2 or less" in problem
    with pytest.raises(JobError, match="no single node can hold one Annotator"):
        check_plan(res, ClusterSize(4, 0, tuple(two)))


def test_actors_that_leave_no_node_a_decode_cpu_are_refused():
    res = spec(annotator_num_cpus=1.5, min_actors=2, max_actors=2)
    check_plan(res, ClusterSize(4, 0))  # 4 - 2 × 1.5 = 1 CPU left in total ...
    problem = node_plan_problem(res, nodes(2, 2))  # ... but 0.5 on each node
    assert problem is not None
    assert "once 2 Annotator(s) of 1.5 CPU are placed, no node keeps 1 CPU" in problem
    assert "resources.annotator_num_cpus or resources.min_actors" in problem
    # one more node, or one larger node, and the plan runs
    assert node_plan_problem(res, nodes(2, 2, 1)) is None
    assert node_plan_problem(res, nodes(2, 2.5)) is None


def test_the_decode_node_is_chosen_so_that_the_actors_still_fit():
    # 1-CPU actors, 2 of them: on nodes of 1 and 2 CPUs the decode task must go on the 2-CPU
    # node beside one actor, never where it takes an actor's only place
    res = spec(annotator_num_cpus=1, min_actors=2, max_actors=2)
    assert node_plan_problem(res, nodes(1, 2)) is None
    assert node_plan_problem(res, nodes(1, 1)) is not None


def test_min_actors_must_fit_node_by_node():
    # 7 CPUs in total hold four 1.5-CPU actors, but one per node: three
    res = spec(annotator_num_cpus=1.5, min_actors=4, max_actors=4)
    problem = node_plan_problem(res, nodes(2, 2, 2, 1))
    assert problem is not None
    assert "resources.min_actors=4 Annotators of 1.5 CPU each do not fit" in problem
    assert "at most 3 do. Lower resources.min_actors to 3" in problem


def test_gpu_and_custom_resources_count_per_node():
    res = spec(annotator_num_cpus=1, annotator_num_gpus=1, min_actors=2, max_actors=2)
    gpu_nodes = [
        NodeResources("cpu00000", "10.0.0.1", 8),
        NodeResources("gpu00001", "10.0.0.2", 4, gpus=1),
        NodeResources("gpu00002", "10.0.0.3", 4, gpus=1),
    ]
    assert node_plan_problem(res, gpu_nodes) is None
    assert node_plan_problem(res, gpu_nodes[:2]) is not None  # one GPU node holds one actor
    half = spec(annotator_num_cpus=1, annotator_num_gpus=0.5, min_actors=2, max_actors=2)
    assert node_plan_problem(half, gpu_nodes[:2]) is None  # two halves share the GPU


def test_a_scan_needs_only_a_node_with_a_decode_task_s_cpus():
    res = spec(decode_num_cpus=2)
    assert node_plan_problem(res, nodes(1, 1), with_model=False) == (
        "decode tasks ask for 2 CPUs each but no node has that many (nodes: 2 nodes × 1 CPU): "
        "lower resources.decode_num_cpus to 1 or add a larger node"
    )
    assert node_plan_problem(res, nodes(1, 2), with_model=False) is None
    with pytest.raises(JobError, match="decode tasks ask for 2 CPUs"):
        check_plan(res, ClusterSize(2, 0, tuple(nodes(1, 1))), with_model=False)


def test_fit_count_is_exact_for_fractions():
    node = NodeResources("n", "a", 0.3)
    assert fit_count(node, {"CPU": 0.1}) == 3  # 0.1 + 0.1 + 0.1 fits in 0.3
    assert fit_count(node, {"CPU": 0.1}, spare_cpus=0.2) == 1
    assert fit_count(node, {"CPU": 0.1}, spare_cpus=0.5) == 0
    assert fit_count(node, {}) == float("inf")  # an actor asking for nothing fits anywhere


def test_alive_nodes_are_read_from_ray_nodes():
    entries = [
        {"NodeID": "a" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.1",
         "Resources": {"CPU": 2.0, "memory": 1e9, "object_store_memory": 1e9,
                       "node:10.0.0.1": 1.0, "node:__internal_head__": 1.0}},
        {"NodeID": "b" * 56, "Alive": True, "NodeManagerAddress": "10.0.0.2",
         "Resources": {"CPU": 4.0, "GPU": 1.0, "gpu_node": 1.0, "node:10.0.0.2": 1.0}},
        {"NodeID": "c" * 56, "Alive": False, "NodeManagerAddress": "10.0.0.3",
         "Resources": {"CPU": 64.0}},
    ]  # fmt: skip
    head, gpu = from_ray_nodes(entries)
    assert (head.cpus, head.gpus, dict(head.custom), head.head) == (2, 0, {}, True)
    assert (gpu.cpus, gpu.gpus, dict(gpu.custom), gpu.head) == (4, 1, {"gpu_node": 1}, False)
    assert head.label == "aaaaaaaa (10.0.0.1, head)"
    assert describe([head, gpu, head]) == "2 nodes × 2 CPU; 1 node × 4 CPU, 1 GPU, 1 gpu_node"


def test_the_embedded_local_ray_is_one_node():
    size = local_cluster_size(spec(cluster_cpus=3))
    assert size.cpus == 3 and [n.cpus for n in size.nodes] == [3]


def test_custom_resources_place_the_annotator_and_are_checked_per_node():
    res = spec(annotator_resources={"gpu_node": 0.001})
    assert annotator_options(res) == {"num_cpus": 1.0, "num_gpus": 0.0,
                                      "resources": {"gpu_node": 0.001}}  # fmt: skip
    assert "resources" not in annotator_options(spec())
    # only the 1-CPU node has the resource: the actor takes its CPU, decoding goes elsewhere
    tagged = [NodeResources("cpu00000", "10.0.0.1", 2),
              NodeResources("gpu00001", "10.0.0.2", 1, custom={"gpu_node": 1})]  # fmt: skip
    assert node_plan_problem(res, tagged) is None
    problem = node_plan_problem(res, tagged[:1])
    assert problem is not None and "no node offers the custom resource 'gpu_node'" in problem
    assert "ray start --resources '{\"gpu_node\": 1}'" in problem
    two = spec(annotator_resources={"gpu_node": 0.001}, min_actors=2, max_actors=2)
    assert "resources.min_actors=2" in node_plan_problem(two, tagged)


@pytest.mark.parametrize(
    ("resources", "words"),
    [({"CPU": 1}, "Ray's own resource"), ({"node:10.0.0.1": 1}, "Ray's own resource"),
     ({"gpu_node": 0}, "must be > 0")],
)  # fmt: skip
def test_annotator_resources_refuse_ray_s_own_names_and_zero(resources, words):
    with pytest.raises(ValidationError, match=words):
        ResourceSpec(annotator_resources=resources)


def test_the_driver_counts_gpus_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys; from earmark.compute.resources import local_cluster_size; "
        "from earmark.contracts import ResourceSpec; local_cluster_size(ResourceSpec()); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
