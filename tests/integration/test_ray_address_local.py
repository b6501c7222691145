"""An exported Jobs API address (infra/README: `export RAY_ADDRESS=http://HEAD:8265`, for
`earmark submit`) no longer breaks a plain local `earmark run`: it runs on an embedded Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq

from paths import DEMO, REPO


def test_a_jobs_api_ray_address_leaves_a_local_run_local_with_a_note(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copy(DEMO / "s01_fox.wav", src)
    # something answers there, as a dashboard would: earmark used to pass it to ray.init, which
    # took it for a Ray Client address and crashed with a traceback
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    jobs_api = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        r = _run_local(src, out, jobs_api)
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "RAY_ADDRESS" in ln]
    assert line.startswith(f"note: ignoring RAY_ADDRESS={jobs_api}, a Jobs API address")
    assert "earmark submit SPEC" in line
    rows = pq.read_table(out).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] and "fox" in rows[0]["transcript"].lower()


def _run_local(src, out, jobs_api: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": jobs_api, "COLUMNS": "250", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "earmark.cli", "run", str(src), "--out", str(out),
           "--model", "whisper:tiny.en", "--tasks", "asr", "--cpus", "2"]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
