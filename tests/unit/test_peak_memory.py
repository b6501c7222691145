"""The summary's `driver_peak_rss_mb` is the job's own peak: a job started by a process that
holds a lot of memory (a benchmark driver, a notebook) must not report the parent's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from paths import REPO

PARENT_MB = 400


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_a_child_reports_its_own_peak_not_its_parents():
    held = bytearray(PARENT_MB << 20)
    held[::4096] = b"\x01" * len(held[::4096])  # touch every page: resident in the parent
    code = (
        "from earmark.batch.runner import _peak_rss_mb; import resource; "
        "print(_peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    ours, rusage = float(out[0]), float(out[1])
    assert rusage > PARENT_MB  # what ru_maxrss says: the parent's peak, kept across exec
    assert 10 < ours < PARENT_MB / 2  # the child's own: the interpreter and earmark's imports
    del held
