"""Which Ray address each command takes: refused with the right form, before Ray is touched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from earmark.compute.address import check_submit_address, kind, resolve_run_address
from earmark.contracts import JobError
from paths import DEMO, REPO


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ray://head:10001", "client"),
        ("RAY://head:10001", "client"),
        ("http://head:8265", "jobs"),
        ("https://head", "jobs"),
        ("auto", "auto"),
        ("local", "local"),
        ("head:6379", "gcs"),
    ],
)
def test_address_kinds(address, expected):
    assert kind(address) == expected


def test_run_refuses_ray_client_and_jobs_api_addresses_with_the_right_form():
    with pytest.raises(JobError) as exc:
        resolve_run_address("ray://head:10001", environ={})
    msg = str(exc.value)
    assert "--address ray://head:10001 is a Ray Client address" in msg
    assert "--address HEAD:6379" in msg and "--address auto" in msg
    assert "earmark submit SPEC --address http://HEAD:8265" in msg

    with pytest.raises(JobError) as exc:
        resolve_run_address("http://head:8265", environ={})
    msg = str(exc.value)
    assert "--address http://head:8265 is the Jobs API" in msg
    assert "earmark submit SPEC --address http://head:8265" in msg and "HEAD:6379" in msg


def test_a_jobs_api_ray_address_in_the_environment_is_ignored_with_a_note():
    env, notes = {"RAY_ADDRESS": "http://head:8265", "OTHER": "1"}, []
    assert resolve_run_address(None, note=notes.append, environ=env) is None
    assert env == {"OTHER": "1"}  # ray.init would read it: it is gone
    (line,) = notes
    assert "ignoring RAY_ADDRESS=http://head:8265" in line and "local Ray" in line
    assert "\n" not in line

    env, notes = {"RAY_ADDRESS": "https://head"}, []
    assert resolve_run_address("auto", note=notes.append, environ=env) == "auto"
    assert env == {} and "the cluster this node belongs to" in notes[0]


def test_gcs_addresses_pass_and_a_job_s_own_ray_address_is_kept():
    env = {"RAY_ADDRESS": "10.0.0.1:6379"}  # what Ray sets inside a submitted job
    assert resolve_run_address(None, environ=env) is None
    assert resolve_run_address("auto", environ=env) == "auto"
    assert env == {"RAY_ADDRESS": "10.0.0.1:6379"}
    # an explicit address wins: ray.init does not read RAY_ADDRESS then
    env = {"RAY_ADDRESS": "http://head:8265"}
    assert resolve_run_address("head:6379", environ=env) == "head:6379"
    assert env == {"RAY_ADDRESS": "http://head:8265"}


def test_a_ray_client_address_in_the_environment_is_refused_for_run_not_for_serve():
    env = {"RAY_ADDRESS": "ray://head:10001"}
    with pytest.raises(JobError, match=r"RAY_ADDRESS=ray://head:10001 is a Ray Client .* unset"):
        resolve_run_address(None, environ=env)
    assert resolve_run_address(None, client_ok=True, environ=env) is None
    assert resolve_run_address("ray://head:10001", client_ok=True, environ={}) == (
        "ray://head:10001"
    )


def test_submit_refuses_a_ray_client_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(JobError, match=r"--address http://HEAD:8265"):
        check_submit_address("ray://head:10001")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(JobError, match="from --address or RAY_ADDRESS"):
        check_submit_address(None)
    for ok in ("http://head:8265", "head:6379", "auto"):
        check_submit_address(ok)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "earmark.cli", *args],
        cwd=REPO,
        env={**base, "COLUMNS": "250", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("command", "address", "words"),
    [
        ("run", "ray://127.0.0.1:10001", "is a Ray Client address, and Ray Data does not run"),
        ("scan", "ray://127.0.0.1:10001", "earmark submit SPEC --address http://HEAD:8265"),
        ("run", "http://127.0.0.1:8265", "is the Jobs API (the dashboard)"),
    ],
)
def test_the_cli_refuses_a_wrong_run_address_with_exit_1_and_no_traceback(
    tmp_path, command, address, words
):
    r = _cli(command, str(DEMO), "--out", str(tmp_path / "out"), "--address", address)
    assert r.returncode == 1, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert "--address HEAD:6379" in r.stderr
    assert not (tmp_path / "out").exists()  # refused before anything started


def test_submit_refuses_a_ray_client_address_with_exit_1(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(f"source: {DEMO}\noutput: {tmp_path / 'out'}\nmodel: {{family: whisper}}\n")
    for args, env in (
        (["submit", str(spec), "--address", "ray://127.0.0.1:10001"], None),
        (["jobs", "list"], {"RAY_ADDRESS": "ray://127.0.0.1:10001"}),
    ):
        r = _cli(*args, env=env)
        assert r.returncode == 1, r.stderr
        assert "Ray Client address" in r.stderr and "http://HEAD:8265" in r.stderr
        assert "Traceback" not in r.stderr
