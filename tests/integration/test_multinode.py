"""`earmark run` on a real two-node Ray cluster (two `ray start` on this machine, see
tests/ray_nodes.py): plans that fit the cluster's totals but no node are refused instead of
hanging, and `resources.annotator_resources` puts the Annotator on the nodes that declare it.

The head has 2 CPUs; the worker has 2 CPUs and the custom resource `gpu_node`, as a GPU node
started with `ray start --resources '{"gpu_node": 1}'` would. The driver is the CLI, run here
as a user would run it, connected to the head's GCS.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from paths import DEMO
from ray_nodes import Head, add_worker, ray_head

CPUS = 2  # per node: 4 in all
REFUSE_TIMEOUT_S = 120  # connect, check, refuse: a hang would run into this


@pytest.fixture(scope="module")
def cluster() -> Iterator[Head]:
    with ray_head(cpus=CPUS) as head:
        add_worker(head, cpus=CPUS, resources={"gpu_node": 1})
        yield head


def write_job(tmp_path: Path, resources: dict, files: int = 2) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for wav in sorted(DEMO.glob("s0*.wav"))[:files]:
        shutil.copy(wav, src)
    spec = {
        "source": str(src),
        "output": str(tmp_path / "out"),
        "tasks": ["asr"],
        "model": {"family": "whisper", "checkpoint": "tiny.en"},
        "resources": resources,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(cluster: Head, job: Path, timeout: float = REFUSE_TIMEOUT_S):
    return cluster.cli("run", "--spec", str(job), "--address", cluster.gcs, timeout=timeout)


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        (
            {"annotator_num_cpus": 2.5},
            [
                "no single node can hold one Annotator, which asks for 2.5 CPU",
                "lower resources.annotator_num_cpus to 2 or less",
            ],
        ),
        (
            {"annotator_num_cpus": 1.5, "min_actors": 2, "max_actors": 2},
            [
                "once 2 Annotator(s) of 1.5 CPU are placed, no node keeps 1 CPU",
                "Lower resources.annotator_num_cpus or resources.min_actors",
            ],
        ),
        (
            {"annotator_resources": {"tpu_node": 1}},
            ["no node offers the custom resource 'tpu_node'"],
        ),
    ],
)
def test_a_plan_that_fits_the_totals_but_no_node_is_refused_not_left_hanging(
    cluster, tmp_path, resources, words
):
    r = run(cluster, write_job(tmp_path, resources))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "1 node × 2 CPU; 1 node × 2 CPU, 1 gpu_node" in r.stderr
    for w in words:
        assert w in r.stderr, r.stderr
    assert not list((tmp_path / "out").glob("*.parquet"))  # nothing ran


def annotator_nodes(cluster: Head) -> set[str]:
    """The nodes the Annotator actors ran on, from the dashboard's state API (dead ones too)."""
    req = urllib.request.Request(
        f"{cluster.address}/api/v0/actors?limit=1000&detail=1",
        headers={"Authorization": f"Bearer {cluster.token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        actors = json.load(r)["data"]["result"]["result"]
    found = {a["node_id"] for a in actors if "Annotator" in a["class_name"]}
    assert found, [a["class_name"] for a in actors]
    return found


def test_annotator_resources_place_the_annotator_on_the_nodes_that_have_them(cluster, tmp_path):
    job = write_job(tmp_path, {"annotator_resources": {"gpu_node": 0.001}}, files=3)
    r = run(cluster, job, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert len(rows) == 3 and {row["status"] for row in rows} == {"ok"}
    (worker,) = cluster.workers
    assert annotator_nodes(cluster) == {worker.node_id}
