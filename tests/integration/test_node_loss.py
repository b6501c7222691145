"""A node dies mid-job on a real two-node Ray cluster and the alive node cannot run the plan:
the job says so in its log within a minute and stops with the cause, instead of hanging.

The head has 1 CPU and the custom resource `annotator_slot`, which the job's Annotator asks for,
so the Annotator takes the head's only CPU and every decode task runs on the 1-CPU worker. When
the worker is killed (SIGKILL of its whole process tree, as a machine that dies), the decode
tasks have nowhere to run: before earmark watched the nodes, Ray waited for a CPU forever.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from earmark.sink.shards import read_output
from paths import DEMO, REPO
from ray_nodes import add_worker, ray_head

FILES = 40  # enough that the job is far from done when its first shard appears
GRACE_S = 3
FIRST_SHARD_TIMEOUT_S = 300  # cluster start, model load and the first file, on 2 busy cores
SAID_WITHIN_S = 60  # the brief: in the job's log within a minute of the node's death
STOPPED_WITHIN_S = 120


def write_job(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):  # distinct paths: distinct files and rows
        shutil.copy(DEMO / "s01_fox.wav", src / f"clip{i:03d}.wav")
    spec = {
        "source": str(src),
        "output": str(tmp_path / "out"),
        "tasks": ["asr"],
        "model": {"family": "whisper", "checkpoint": "tiny.en"},
        "resources": {
            "annotator_resources": {"annotator_slot": 0.001},
            "files_per_batch": 1,
            "node_loss_grace_s": GRACE_S,
        },
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def wait_until(condition, timeout: float, proc: subprocess.Popen, what: str, log: Path) -> float:
    """Poll `condition` until it holds; returns when it did (monotonic seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(
                f"the job exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}"
            )
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.2)
    return time.monotonic()


def test_a_dead_worker_that_breaks_the_plan_is_said_and_stops_the_job(tmp_path):
    job = write_job(tmp_path)
    out, err_path = tmp_path / "out", tmp_path / "stderr.txt"
    with ray_head(cpus=1, resources={"annotator_slot": 1}) as head:
        worker = add_worker(head, cpus=1)
        cmd = [sys.executable, "-m", "earmark.cli", "run", "--spec", str(job),
               "--address", head.gcs]  # fmt: skip
        with open(err_path, "w") as err:
            proc = subprocess.Popen(cmd, cwd=REPO, env=head.env, stdout=subprocess.DEVNULL,
                                    stderr=err, start_new_session=True)  # fmt: skip
        try:
            # a staged batch: files are being annotated (parts are folded from these later)
            staged = out / "_staging"
            wait_until(
                lambda: any(staged.glob("*.staged")), FIRST_SHARD_TIMEOUT_S, proc, "shard", err_path
            )
            worker.kill()
            killed = time.monotonic()
            said = wait_until(
                lambda: "earmark cluster: the cluster lost node" in err_path.read_text(),
                SAID_WITHIN_S, proc, "node-loss message", err_path,
            )  # fmt: skip
            assert said - killed < SAID_WITHIN_S
            proc.wait(timeout=STOPPED_WITHIN_S)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = err_path.read_text()
    assert proc.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    lost = f"the cluster lost node {worker.node_id[:8]} ("
    ours = [ln for ln in stderr.splitlines() if ln.startswith("earmark cluster:")]
    assert lost in ours[0] and "no node keeps 1 CPU for a decode task" in ours[0]
    assert f"Waiting up to {GRACE_S} s for nodes" in ours[0]
    assert ours[-1] == f"earmark cluster: no node came back in {GRACE_S} s: stopping the job"
    (error,) = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert lost in error and f"no node came back in {GRACE_S} s" in error
    written = read_output(str(out), staged=True, columns=["audio_id"]).num_rows
    assert 0 < written < FILES  # stopped, not finished
