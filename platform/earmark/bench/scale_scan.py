"""One measured `earmark scan` of the archive-scale benchmark, shared by the local sizes
(`scale_bench`) and the S3 prefix (`scale_s3`): the scan in its own process, the committed
output files, DuckDB's count, and the rows every scale table shows.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from earmark.bench.common import say

NEW_FRACTION = 0.01  # files added before the third run
DASH = "—"  # a size that was not run


def label(n: int) -> str:
    return f"{n // 10**6}M" if n % 10**6 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def scan(source: Path | str, out: Path, cpus: int, log: Path, *extra: str) -> dict[str, Any]:
    """`earmark scan SOURCE --out OUT --cpus CPUS EXTRA...` in a subprocess with no RAY_ADDRESS;
    its `_summary.json` plus proc_wall_s and steady-state rates. RuntimeError naming the log
    when the scan fails or writes no summary."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "earmark.cli", "scan", str(source), "--out", str(out)]
    cmd += ["--cpus", str(cpus), *extra]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    path = out / "_summary.json"
    if rc != 0 or not path.exists():
        tail = log.read_text().splitlines()[-15:]
        raise RuntimeError(f"earmark scan {source} exited {rc}; log {log}:\n" + "\n".join(tail))
    s = json.loads(path.read_text())
    files = s["rows"] = s["files_ok"] + s["files_error"]
    s["audio_s"] = s["audio_hours"] * 3600
    first = s.get("first_file_s")
    steady = s["wall_s"] - first if first is not None else None
    s["proc_wall_s"], s["load_1m_before"] = wall, round(load, 2)
    s["files_per_s"] = files / steady if steady else None
    s["audio_s_per_s"] = s["audio_s"] / steady if steady else None
    if first is None and files:
        say(f"WARNING: {path} has no first_file_s although {files} rows were written")
    return s


def output_parts(out: Path) -> tuple[int, float]:
    """(number, median MB) of the committed files OUT/part-*.parquet."""
    sizes = [p.stat().st_size for p in out.glob("part-*.parquet")]
    return len(sizes), statistics.median(sizes) / 1e6 if sizes else 0.0


def duckdb_count(out: Path) -> tuple[int, float]:
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    q = f"select count(distinct audio_id) from read_parquet('{out}/*.parquet')"
    (n,) = con.execute(q).fetchone()
    con.close()
    return int(n), time.perf_counter() - t0


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def field(run: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        run = run.get(key) if isinstance(run, dict) else None
    return run


def cell(run: dict[str, Any], paths: tuple[str, ...]) -> str:
    """The fields of a run shown "a / b"."""
    return " / ".join(fmt(field(run, p)) for p in paths)


SCALE_ROWS = (  # (label, fields of a run, shown "a / b", target, check key)
    ("corpus build s (not timed)", ("corpus_build_s",), "", ""),
    ("files listed / rows written", ("first.files_listed", "first.rows"), "= N", ""),
    ("driver peak RSS MiB", ("first.driver_peak_rss_mb",), "1M ≤ 1.5× 10k", "rss"),
    ("time to first file s", ("first.first_file_s",), "≤ 30 s at 1M", "first"),
    ("files/s steady state", ("first.files_per_s",), "1M ≥ 0.8× 10k", "rate"),
    ("wall s: wall_s / process", ("first.wall_s", "first.proc_wall_s"), "", ""),
    ("output files / median MB", ("output_files", "median_file_mb"), "≤ 100 per 1M", "parts"),
    ("rerun all done: wall_s / process", ("rerun_done.wall_s", "rerun_done.proc_wall_s"),
     "≤ 60 s at 1M", "done"),
    ("rerun +1 %: new files / files_ok", ("new_files", "rerun_new.files_ok"), "equal", ""),
    ("rerun +1 %: wall_s / process", ("rerun_new.wall_s", "rerun_new.proc_wall_s"),
     "≤ 60 s + the 1 %'s time", "new"),
    ("DuckDB distinct audio_id / s", ("duckdb_distinct", "duckdb_s"), "= N + 1 %", "count"),
)  # fmt: skip
