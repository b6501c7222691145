"""A two-node cluster where one node cannot see a local folder (a mount namespace hides it):
the job is refused before any work, naming the node and the fix, instead of writing not_found
rows or shards that land on one node's disk. A folder both nodes see runs as usual."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earmark.sink.shards import read_output
from earmark.testing.faulty import write_plan
from paths import REPO
from ray_nodes import add_worker, ray_head

JOB_TIMEOUT_S = 300
FAULTY = "earmark.testing.faulty.FaultyModel"


def tones(d: Path, n: int) -> Path:
    d.mkdir(parents=True)
    for i in range(n):
        t = np.arange(16_000 + 1000 * i) / 16_000
        sf.write(d / f"tone{i}.wav", 0.3 * np.sin(2 * np.pi * 300 * t), 16_000)
    return d


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU) + a worker (1 CPU) that cannot see `hidden`: its node runs in a mount
    namespace where an empty tmpfs covers that folder."""
    hidden = Path(tempfile.mkdtemp(prefix="em-hidden-"))
    shared = Path(tempfile.mkdtemp(prefix="em-shared-"))
    with ray_head(cpus=1) as head:
        add_worker(head, cpus=1, hide=hidden)
        yield head, hidden, shared


def run(head, src: Path, out: Path, ckpt: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in head.env.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "earmark.cli", "run", str(src), "--out", str(out),
         "--model", f"{FAULTY}:{ckpt}", "--address", head.gcs],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip


def test_a_folder_one_node_cannot_see_is_refused_before_any_work(cluster):
    head, hidden, shared = cluster
    ckpt = write_plan(shared / "ckpt-refused")
    src, out = tones(hidden / "src", 4), hidden / "out"
    r = run(head, src, out, ckpt)
    assert r.returncode == 1, r.stdout + r.stderr
    text = " ".join((r.stdout + r.stderr).split())
    assert "not every node of the cluster can see" in text
    assert "output: cannot read" in text and f"source: {src}/tone0.wav not found" in text
    assert "object store" in text and "Traceback" not in text
    assert not list(out.glob("part-*")) and not list(out.glob(".earmark-probe-*"))


def test_a_folder_every_node_sees_runs(cluster):
    head, _, shared = cluster
    ckpt = write_plan(shared / "ckpt-ok")
    src, out = tones(shared / "src", 4), shared / "out"
    r = run(head, src, out, ckpt)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = read_output(str(out)).to_pylist()
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows)
    assert not [p for p in os.listdir(out) if p.startswith(".earmark-probe-")]
