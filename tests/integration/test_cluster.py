"""`earmark submit` and `earmark jobs` against a real Ray head started here with `ray start --head`.

The head is this module's own (tests/ray_nodes.py: its own temp dir, ports and token, killed as a
process tree at the end). The CLI runs as a subprocess, as a user would run it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from earmark.batch.progress import INTERVAL_ENV
from earmark.batch.progress import PREFIX as PROGRESS_PREFIX
from earmark.contracts import JobSpec
from paths import DEMO, REPO
from ray_nodes import Head, bare_python, ray_head
from servers import free_port

HEAD_CPUS = 2  # logical: one Annotator actor + one decode task, as the demo spec asks
JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def bare_bin(tmp_path_factory) -> Path:
    return bare_python(tmp_path_factory.mktemp("py"))


@pytest.fixture(scope="module")
def head(bare_bin) -> Iterator[Head]:
    # the head's PATH starts with a venv that has nothing installed: its `python` is not the one
    # Ray runs under (a head whose `ray start` came from a venv that was never activated), and
    # submitted jobs must still run with Ray's own interpreter
    with ray_head(cpus=HEAD_CPUS, path_bin=bare_bin) as h:
        yield h


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
    # the entrypoint ran the interpreter Ray runs under, not the head's PATH python
    assert f"earmark job: running with {Path(sys.executable).parent / 'python'} (" in logs.stdout
    assert "the interpreter Ray runs under on that node" in logs.stdout
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


def test_a_job_whose_python_lacks_a_module_says_which_where_and_how_to_fix_it(
    head, bare_bin, tmp_path
):
    write_spec(tmp_path / "bare.yaml", tmp_path / "out")
    python = bare_bin / "python"
    r = head.cli("submit", str(tmp_path / "bare.yaml"), "--env", f"EARMARK_PYTHON={python}")
    assert r.returncode == 0, r.stderr
    sid = r.stdout.strip().splitlines()[-1]
    logs = head.cli("jobs", "logs", sid, "--follow", timeout=JOB_TIMEOUT_S)
    assert logs.returncode == 1 and f"{sid}: FAILED" in logs.stderr
    assert "Traceback" not in logs.stdout
    (line,) = [ln for ln in logs.stdout.splitlines() if "is not installed in" in ln]
    assert re.match(rf"earmark job: Python module '\w+' is not installed in {python} ", line)
    assert "the interpreter named by EARMARK_PYTHON, on node " in line
    assert "--env EARMARK_PYTHON=/path/to/python" in line and "--image" in line


def test_a_wrong_token_is_refused(head):
    r = head.cli("jobs", "list", env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert r.returncode == 1
    assert "token" in r.stderr.lower() and "Traceback" not in r.stderr


def test_a_relative_output_is_refused_before_contacting_the_cluster(head, tmp_path):
    r = head.cli("submit", str(REPO / "jobs" / "demo.yaml"), "--address", "http://127.0.0.1:9")
    assert r.returncode != 0 and "relative path" in r.stderr


def progress_counts(logs: str) -> list[tuple[int, int, bool]]:
    """(done, total, still listing) of every progress line, in order."""
    found = re.findall(rf"{re.escape(PROGRESS_PREFIX)} (\d+)/(\d+)(\+?) files", logs)
    return [(int(d), int(t), bool(plus)) for d, t, plus in found]


def test_a_submitted_job_logs_progress_lines_while_it_runs(head, tmp_path):
    spec = write_spec(tmp_path / "progress.yaml", tmp_path / "out")
    sid = f"earmark-{spec.job_id}"
    r = head.cli("submit", str(tmp_path / "progress.yaml"), "--env", f"{INTERVAL_ENV}=0.5")
    assert r.returncode == 0, r.stderr

    # the first line must reach `jobs logs --follow` while the job runs, not when it ends
    follow = subprocess.Popen(
        [sys.executable, "-m", "earmark.cli", "jobs", "logs", sid, "--follow"],
        cwd=REPO, env=head.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = next((ln for ln in follow.stdout if PROGRESS_PREFIX in ln), None)
        # at once, before anything is listed: nothing done, and the total still growing
        assert first is not None and progress_counts(first) == [(0, 0, True)], first
        assert str(head.client().get_job_status(sid)) == "RUNNING"
        status = head.cli("jobs", "status", sid)
        assert status.returncode == 0 and PROGRESS_PREFIX in status.stdout, status.stdout
        follow.communicate(timeout=JOB_TIMEOUT_S)
        assert follow.returncode == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()

    logs = head.cli("jobs", "logs", sid)
    assert logs.returncode == 0, logs.stderr
    counts = progress_counts(logs.stdout)
    assert len(counts) >= 3, counts  # start, timer, end
    totals = [t for _, t, _ in counts]
    assert totals == sorted(totals) and counts[-1] == (14, 14, False), counts
    # once the listing is over the total is final; it is a lower bound only while listing
    assert {t for _, t, listing in counts if not listing} == {14}, counts
    assert all(t <= 14 for t in totals)
    done = [d for d, _, _ in counts]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 14, done
    line = next(ln for ln in logs.stdout.splitlines() if ln.startswith(f"{PROGRESS_PREFIX} 14/"))
    assert re.search(r"audio h, 0 errors, [\d.]+ files/s, [\d.]+ audio h/wall h, elapsed", line)

    status = head.cli("jobs", "status", sid, "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["status"] == "SUCCEEDED" and info["progress"].startswith(f"{PROGRESS_PREFIX} 14/14")


SERVE_START_TIMEOUT_S = 300  # Serve + a Whisper replica on 2 busy cores
# another user's app on the same cluster: a trivial deployment, pickled by value from __main__
OTHER_APP = """
import sys

import ray
from ray import serve

ray.init(address=sys.argv[1], log_to_driver=False)
if sys.argv[2] == "deploy":

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    def other(request):
        return "other app"

    serve.run(other.bind(), name="other", route_prefix="/other")
else:
    serve.shutdown()
"""


def start_serve(head: Head, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "earmark.cli", "serve", "--model", "whisper:tiny.en",
           "--address", head.gcs, "--port", str(port)]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, env=head.env, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def http_status(url: str) -> int | None:
    """The HTTP status, or None when nothing answers on that port."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_answering(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while http_status(url) != 200:
        if proc.poll() is not None:
            raise AssertionError(
                f"earmark serve exited with {proc.returncode}:\n{proc.stdout.read()}"
            )
        assert time.monotonic() < deadline, f"{url} did not answer in {SERVE_START_TIMEOUT_S} s"
        time.sleep(1)


def stop_serve(proc: subprocess.Popen, sig: signal.Signals = signal.SIGINT) -> str:
    """Ctrl-C as a terminal sends it (to the process group), or SIGTERM as a service manager
    does (to the process); returns what it printed."""
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in out, out
    return out


def serve_apps(head: Head) -> dict:
    """Serve's applications on the cluster, from the dashboard's REST API."""
    req = urllib.request.Request(f"{head.address}/api/serve/applications/",
                                 headers={"Authorization": f"Bearer {head.token}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read()).get("applications") or {}


def wait_closed(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while http_status(url) is not None:
        assert time.monotonic() < deadline, f"{url} still answers"
        time.sleep(0.5)


def other_app(head: Head, action: str) -> None:
    r = subprocess.run([sys.executable, "-c", OTHER_APP, head.gcs, action], cwd=head.root,
                       env=head.env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]


def test_serve_on_a_cluster_cleans_up_on_ctrl_c_and_refuses_a_port_it_cannot_serve(head):
    port, other_port = free_port(), free_port()
    url, other_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{other_port}"
    procs = [start_serve(head, port)]
    try:
        wait_answering(procs[0], url + "/healthz")
        assert "earmark" in serve_apps(head)

        # Serve's port is fixed while it runs: another port is refused, with the one to use
        r = head.cli("serve", "--model", "whisper:tiny.en", "--address", head.gcs,
                     "--port", str(other_port), timeout=180)  # fmt: skip
        assert r.returncode == 1, r.stderr
        assert f"listens on 127.0.0.1:{port}" in r.stderr and f"--port {port} " in r.stderr
        # the same port would replace the running app: refused too, and the app still answers
        r = head.cli("serve", "--model", "whisper:tiny.en", "--address", head.gcs, timeout=180)
        assert r.returncode == 1 and "already deployed" in r.stderr and "--replace" in r.stderr
        assert http_status(url + "/healthz") == 200

        out = stop_serve(procs[0])
        assert f"at {url}" in out and "shut Serve down" in out
        assert serve_apps(head) == {}
        wait_closed(url)  # the proxies went with Serve: the port is free again

        # a new Serve on another port answers there
        procs.append(start_serve(head, other_port))
        wait_answering(procs[1], other_url + "/healthz")

        # someone else deploys on the same Serve: stopping now deletes earmark's app only
        other_app(head, "deploy")
        out = stop_serve(procs[1], signal.SIGTERM)
        assert f"at {other_url}" in out
        assert "deleted app 'earmark'; Serve stays up (other apps: other)" in out
        assert set(serve_apps(head)) == {"other"}
        assert http_status(other_url + "/healthz") == 404  # no app on / any more
        assert http_status(other_url + "/other") == 200
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        other_app(head, "shutdown")
