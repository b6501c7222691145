"""The submitted job's entrypoint, run by a real shell as Ray's job supervisor runs it: it picks
the interpreter Ray runs under, whatever `python` PATH holds, and names a missing module."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import ray._raylet  # noqa: F401  (mapped into this process, as in Ray's job supervisor)

from earmark.cluster.jobs import ENTRYPOINT
from paths import REPO
from ray_nodes import bare_python

PLATFORM = REPO / "platform"


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    return bare_python(tmp_path_factory.mktemp("py"))


def run_entrypoint(env: dict[str, str], nested: bool = False) -> subprocess.CompletedProcess:
    """`sh -c ENTRYPOINT` as a child of this process (which has Ray loaded, like the job
    supervisor), or of another shell (`nested`: a parent without Ray)."""
    cmd = ["/bin/sh", "-c", ENTRYPOINT]
    if nested:  # `; :` keeps the outer shell alive, as the inner one's parent
        cmd = ["/bin/sh", "-c", f"/bin/sh -c {shlex.quote(ENTRYPOINT)}; :"]
    base = {k: v for k, v in os.environ.items() if k not in ("EARMARK_JOB_SPEC", "EARMARK_PYTHON")}
    return subprocess.run(cmd, env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_the_interpreter_ray_runs_under_is_used_whatever_path_holds(bare):
    r = run_entrypoint({"PATH": f"{bare}{os.pathsep}/usr/bin:/bin"})
    assert r.stdout.startswith(
        f"earmark job: running with {Path(sys.executable).parent / 'python'} (Python "
    ), r.stdout + r.stderr
    assert "the interpreter Ray runs under on that node" in r.stdout
    # then earmark.cluster runs, and wants a spec (only `earmark submit` sets it)
    assert r.returncode == 1 and "EARMARK_JOB_SPEC is not set" in r.stderr


def test_earmark_python_names_the_interpreter_and_a_missing_module_is_named(bare):
    env = {"EARMARK_PYTHON": str(bare / "python"), "PYTHONPATH": str(PLATFORM)}
    r = run_entrypoint(env)
    assert r.returncode == 1
    assert f"running with {bare / 'python'} (Python " in r.stdout
    (line,) = r.stderr.strip().splitlines()  # one message, no traceback
    # the first of earmark's dependencies it imports (pyarrow, pydantic, ...) is named
    assert re.match(rf"earmark job: Python module '\w+' is not installed in {bare}/python ", line)
    assert "the interpreter named by EARMARK_PYTHON, on node " in line
    assert "earmark submit --env EARMARK_PYTHON=/path/to/python" in line


def test_without_ray_s_interpreter_path_s_python_is_used_and_named(bare):
    env = {"PATH": f"{bare}{os.pathsep}/usr/bin:/bin", "PYTHONPATH": str(PLATFORM)}
    r = run_entrypoint(env, nested=True)
    assert f"running with {bare / 'python'}" in r.stdout, r.stdout + r.stderr
    assert "the interpreter first on PATH (the one Ray runs under was not found)" in r.stderr
