"""`earmark submit` and `earmark jobs` against a real Ray head started here with `ray start --head`.

The head is this module's own: its own temp dir, ports and token (token auth on), started as
`ray start --block` in a new session and killed as a process tree at the end, so neither the
session's embedded Ray nor any other Ray on the machine is touched (`ray stop` would stop them all).
The CLI runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from earmark.schemas import JobSpec
from paths import DEMO, REPO
from servers import free_port

HEAD_CPUS = 2  # logical: one Annotator actor + one decode task, as the demo spec asks
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 240
BIN = Path(sys.executable).parent


@dataclass
class Head:
    address: str
    token: str
    env: dict[str, str]  # what a user's shell would hold: the address and the token
    root: Path

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
        return subprocess.run(
            [sys.executable, "-m", "earmark.cli", *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})


def _ready(url: str, token: str) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def _kill_tree(pid: int) -> None:
    """SIGKILL `ray start --block` and everything under it (GCS, raylet, workers, job drivers).
    SIGTERM would make the head drain for 30 s first."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=20)


@pytest.fixture(scope="module")
def head():
    # a short path: Ray's unix sockets live under it and must stay < 108 bytes
    root = Path(tempfile.mkdtemp(prefix="emhead-", dir="/tmp"))
    token = secrets.token_hex(24)
    (root / "token").write_text(token)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base.pop("PYTHONPATH", None)
    base |= {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(root / "token"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "250",  # rich wraps messages at 80 columns when not on a terminal
        # a cluster node's `python` is the environment Ray runs in
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    dash = free_port()
    ports = {
        "--port": free_port(),
        "--dashboard-port": dash,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--num-cpus={HEAD_CPUS}",
           "--num-gpus=0", f"--temp-dir={root / 'ray'}", "--disable-usage-stats",
           *(f"{k}={v}" for k, v in ports.items())]  # fmt: skip
    log = open(root / "head.log", "w")
    proc = subprocess.Popen(cmd, env=base, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=root)  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(f"{address}/api/jobs/", token):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray head did not start: {(root / 'head.log').read_text()}")
            time.sleep(1)
        user_env = {**base, "RAY_ADDRESS": address}
        yield Head(address=address, token=token, env=user_env, root=root)
    finally:
        _kill_tree(proc.pid)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def write_spec(path: Path, output: Path) -> JobSpec:
    """The demo job (Whisper tiny.en on data/demo), with an absolute source and output."""
    text = (REPO / "jobs" / "demo.yaml").read_text()
    text = text.replace("source: data/demo/manifest.jsonl", f"source: {DEMO / 'manifest.jsonl'}")
    text = text.replace("output: out/demo", f"output: {output}")
    path.write_text(text)
    return JobSpec.from_yaml(path)


def wait_status(head: Head, sid: str, want: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = str(head.client().get_job_status(sid))
        if status in want or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_submit_follow_and_resubmit_is_idempotent(head, tmp_path):
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "demo.yaml", out)
    sid = f"earmark-{spec.job_id}"

    r = head.cli("submit", str(tmp_path / "demo.yaml"), "--env", "EARMARK_TEST_MARK=42")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == sid

    logs = head.cli("jobs", "logs", sid, "--follow", timeout=JOB_TIMEOUT_S)
    assert logs.returncode == 0, logs.stdout[-3000:] + logs.stderr[-3000:]
    assert f"earmark job {spec.job_id}" in logs.stdout and "14 / 0" in logs.stdout
    assert f"{sid}: SUCCEEDED" in logs.stderr
    # the driver imported the uploaded package, not the one installed beside this test
    (line,) = [ln for ln in logs.stdout.splitlines() if ln.startswith("earmark 0")]
    assert str(head.root) in line and str(REPO) not in line

    table = pq.read_table(out).to_pandas()
    assert len(table) == 14 and table["audio_id"].is_unique
    assert set(table["status"]) == {"ok"} and set(table["job_id"]) == {spec.job_id}
    fox = table.loc[table["uri"].str.endswith("s01_fox.wav"), "transcript"].item()
    assert "fox" in fox.lower()
    shards = sorted(p.name for p in out.rglob("*.parquet"))

    info = head.client().get_job_info(sid)
    env = info.runtime_env["env_vars"]
    assert env["EARMARK_TEST_MARK"] == "42" and env["HF_HUB_OFFLINE"] == "1"
    assert info.runtime_env["py_modules"] and info.runtime_env["working_dir"]

    again = head.cli("submit", str(tmp_path / "demo.yaml"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == sid
    assert "already SUCCEEDED" in again.stderr
    ours = [j for j in head.client().list_jobs() if spec.job_id in (j.submission_id or "")]
    assert len(ours) == 1  # nothing was submitted the second time
    assert sorted(p.name for p in out.rglob("*.parquet")) == shards

    listed = head.cli("jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(ln) for ln in listed.stdout.splitlines() if ln.strip()]
    assert {"submission_id": sid, "status": "SUCCEEDED"}.items() <= next(
        r for r in rows if r["submission_id"] == sid
    ).items()
    status = head.cli("jobs", "status", spec.job_id)  # a job id means its latest attempt
    assert status.returncode == 0 and f"{sid}: SUCCEEDED" in status.stdout


def test_stop_a_running_job_then_resubmit_starts_attempt_two(head, tmp_path):
    spec = write_spec(tmp_path / "stop.yaml", tmp_path / "out")
    sid = f"earmark-{spec.job_id}"
    r = head.cli("submit", str(tmp_path / "stop.yaml"))
    assert r.returncode == 0, r.stderr
    assert wait_status(head, sid, {"RUNNING", "SUCCEEDED", "FAILED"}) == "RUNNING"

    stopped = head.cli("jobs", "stop", sid)
    assert stopped.returncode == 0, stopped.stderr
    assert f"{sid}: STOPPED" in stopped.stdout
    assert str(head.client().get_job_status(sid)) == "STOPPED"

    retry = head.cli("submit", str(tmp_path / "stop.yaml"))
    assert retry.returncode == 0, retry.stderr
    assert retry.stdout.strip().splitlines()[-1] == f"{sid}-r2"
    assert "attempt 1 was STOPPED" in retry.stderr
    # stop by job id: it means the latest attempt (saves the test a second full run)
    stopped = head.cli("jobs", "stop", spec.job_id)
    assert stopped.returncode == 0 and f"{sid}-r2: STOPPED" in stopped.stdout


def test_a_wrong_token_is_refused(head):
    r = head.cli("jobs", "list", env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert r.returncode == 1
    assert "token" in r.stderr.lower() and "Traceback" not in r.stderr


def test_a_relative_output_is_refused_before_contacting_the_cluster(head, tmp_path):
    r = head.cli("submit", str(REPO / "jobs" / "demo.yaml"), "--address", "http://127.0.0.1:9")
    assert r.returncode != 0 and "relative path" in r.stderr
