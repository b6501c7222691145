"""`earmark serve` and `earmark query` exactly as the README runs them: a real process with its
own embedded Ray, queried over HTTP by the CLI client, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import jiwer

from paths import DEMO, REPO
from servers import free_port

START_TIMEOUT_S = 300  # a fresh Ray + Serve + model load on 2 busy cores
STOP_TIMEOUT_S = 120  # Serve drains, then the embedded Ray stops
KEY = "cli-test-key"
FOX = "the quick brown fox jumps over the lazy dog near the river bank"


def earmark(*args: str) -> list[str]:
    return [sys.executable, "-m", "earmark.cli", *args]


def cli_env(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "EARMARK_API_KEY")}
    env["HF_HUB_OFFLINE"] = "1"
    if key is not None:
        env["EARMARK_API_KEY"] = key
    return env


def wait_healthy(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read()
            raise AssertionError(f"earmark serve exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"earmark serve was not healthy after {START_TIMEOUT_S} s")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_query_then_ctrl_c_stops_cleanly():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = earmark("serve", "--model", "whisper:tiny.en", "--port", str(port), "--cpus", "2")
    proc = subprocess.Popen(cmd, env=cli_env(KEY), cwd=REPO, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_healthy(proc, url)

        q = subprocess.run(earmark("query", str(DEMO / "s01_fox.wav"), "--url", url),
                           env=cli_env(KEY), cwd=REPO, capture_output=True, text=True,
                           timeout=180)  # fmt: skip
        assert q.returncode == 0, q.stderr
        row = json.loads(q.stdout)
        assert row["status"] == "ok" and row["uri"].endswith("s01_fox.wav")
        hyp = jiwer.RemovePunctuation()(row["transcript"].lower()).strip()
        assert jiwer.wer(FOX, hyp) < 0.2, row["transcript"]
        assert row["model"] == "whisper:tiny.en" and row["num_windows"] >= 1

        # the same query without the token: refused by the server, said plainly, exit 1
        q = subprocess.run(earmark("query", str(DEMO / "s01_fox.wav"), "--url", url),
                           env=cli_env(None), cwd=REPO, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert q.returncode == 1 and "HTTP 401" in q.stdout + q.stderr

        # Ctrl-C in a terminal signals the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=STOP_TIMEOUT_S)
        assert proc.returncode == 0, out
        assert f"at {url}" in out and "stopped" in out and "Traceback" not in out
        try:
            httpx.get(url + "/healthz", timeout=2)
            raise AssertionError("the port still answers after Ctrl-C")
        except httpx.TransportError:
            pass
        deadline = time.monotonic() + 30  # Ray's own helpers exit shortly after the driver
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not group_alive(proc.pid), "processes of the stopped server are still running"
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
