"""Archive-scale benchmark (`earmark bench scale`): `earmark scan` on N tiny files, N = 10k,
100k, 1M, each run in its own `earmark scan` process (a fresh driver and embedded Ray).

Per size: the first scan (driver peak RSS, time to the first file's row, files/s at steady
state, wall time, committed output files and their median size), the rerun with everything
done, the rerun after 1 % new files (its files_ok must be that 1 %), and DuckDB counting the
distinct audio_id of the output (must be N + 1 %). Steady state is from the first row's arrival
at the driver to the end: (files_ok + files_error) / (wall_s - first_file_s). With `--packed`,
the same speech clips loose, in Parquet (HF struct) and in WebDataset tars are scanned, and the
decode throughput of the packed forms is compared with the loose files.

Figures but the process wall time come from the scan's `_summary.json`. Corpus building is
never timed (printed apart). One untimed scan of a few files warms the caches first: the first
scan after a while is seconds slower to start (Ray's binaries and libraries read from disk).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from earmark.bench import scale_corpus as sc
from earmark.bench.common import conditions, format_conditions, ratio, say, table, workspace

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
NEW_FRACTION = 0.01  # files added before the third run
DASH = "—"  # a size that was not run
RSS_GROWTH_MAX = 1.5  # driver peak RSS at the largest size ≤ this × at the smallest
FIRST_FILE_MAX_S = 30.0  # time to the first decoded file at 1M
RATE_MIN = 0.8  # files/s at the largest size ≥ this × at the smallest
RERUN_MAX_S = 60.0  # rerun with everything done (and with 1 % new, plus that 1 %'s time)
FILES_PER_MILLION = 100  # committed output files per 1M inputs, at most
PACKED_MIN = 0.9  # packed decode throughput ≥ this × loose
WARMUP_FILES = 20  # files of the untimed first scan


def _label(n: int) -> str:
    return f"{n // 10**6}M" if n % 10**6 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def scan(source: Path, out: Path, cpus: int, log: Path) -> dict[str, Any]:
    """`earmark scan SOURCE --out OUT --cpus CPUS` in a subprocess with no RAY_ADDRESS; its
    `_summary.json` plus proc_wall_s and steady-state rates. RuntimeError naming the log when
    the scan fails or writes no summary."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "earmark.cli", "scan", str(source), "--out", str(out)]
    cmd += ["--cpus", str(cpus)]
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


def bench_size(root: Path, n: int, source: str, cpus: int) -> dict[str, Any]:
    """The four measurements of one size (see the module docstring)."""
    corpus = sc.build_scale_corpus(root / "corpus", n)
    say(
        f"{_label(n)}: corpus of {n} links {'reused' if corpus['reused'] else 'built'} "
        f"in {corpus['build_s']:.1f} s"
    )
    src = corpus["manifest"] if source == "manifest" else corpus["files"]
    out, log = root / "out", root / "scan.log"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    res: dict[str, Any] = {"n": n, "source": source, "corpus_build_s": corpus["build_s"]}
    say(f"{_label(n)}: first scan")
    res["first"] = scan(src, out, cpus, log)
    res["output_files"], res["median_file_mb"] = output_parts(out)
    say(f"{_label(n)}: rerun with everything done")
    res["rerun_done"] = scan(src, out, cpus, log)
    k = max(1, round(n * NEW_FRACTION))
    sc.add_new_files(root / "corpus", n, k)
    res["new_files"] = k
    say(f"{_label(n)}: rerun with {k} new files")
    res["rerun_new"] = scan(src, out, cpus, log)
    res["final_output_files"], res["final_median_file_mb"] = output_parts(out)
    res["duckdb_distinct"], res["duckdb_s"] = duckdb_count(out)
    rate = res["first"]["files_per_s"]
    res["new_time_s"] = k / rate if rate else None  # that 1 % at the first run's steady rate
    return res


def warm_up(work: Path, cpus: int) -> float:
    """The untimed scan of WARMUP_FILES files (see the module docstring); its process wall s."""
    corpus = sc.build_scale_corpus(work / "warmup" / "corpus", WARMUP_FILES)
    out, log = work / "warmup" / "out", work / "warmup" / "scan.log"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    return scan(corpus["manifest"], out, cpus, log)["proc_wall_s"]


def bench_packed(root: Path, clips: int, cpus: int) -> dict[str, Any]:
    """Scan the same clips loose, as Parquet and as WebDataset; rates and packed/loose ratios."""
    forms = sc.packed_corpora(root / "packed", sc.speech_clips(clips))
    res: dict[str, Any] = {"clips": clips}
    for name, folder in forms.items():
        out = root / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        say(f"packed comparison: {name} ({clips} clips)")
        (root / f"scan-{name}.log").unlink(missing_ok=True)
        res[name] = scan(folder, out, cpus, root / f"scan-{name}.log")
    for r in res.values():
        if isinstance(r, dict):  # audio s per wall s of the whole run, start-up included
            r["audio_s_per_wall_s"] = r["audio_s"] / r["wall_s"] if r["wall_s"] else None
    for name in ("parquet", "webdataset"):
        for key in ("audio_s_per_s", "files_per_s", "audio_s_per_wall_s"):
            a, b = res[name][key], res["loose"][key]
            res[name][f"{key}_ratio"] = a / b if a and b else None
    return res


def _conditions(cpus: int, source: str, load_before: tuple[float, ...]) -> dict[str, Any]:
    import ray

    return conditions(
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        ray=ray.__version__,
        scan_cpus=cpus,
        source=source,
    )


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return DASH
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _checks(runs: dict[int, dict[str, Any]]) -> dict[str, str]:
    """Each target checked at the largest size run (against the smallest for the ratios)."""
    if not runs:
        return {}
    lo, hi = runs[min(runs)], runs[max(runs)]
    at = f"at {_label(hi['n'])}"
    vs = at + (f" vs {_label(lo['n'])}" if lo is not hi else "")

    def verdict(ok: bool | None, what: str, where: str = at) -> str:
        return DASH if ok is None else f"{'met' if ok else 'MISSED'} ({what} {where}".strip() + ")"

    def x(a: float | None, b: float | None) -> str:
        return f"{ratio(a, b):.2f}×" if a is not None and b else DASH

    f, lf, first = hi["first"], lo["first"], hi["first"]["first_file_s"]
    rss_ok = f["driver_peak_rss_mb"] <= RSS_GROWTH_MAX * lf["driver_peak_rss_mb"]
    rate = f["files_per_s"], lf["files_per_s"]
    rate_ok = None if not all(rate) else rate[0] >= RATE_MIN * rate[1]
    done_s, new_s = hi["rerun_done"]["proc_wall_s"], hi["rerun_new"]["proc_wall_s"]
    new_limit = RERUN_MAX_S + (hi["new_time_s"] or 0.0)
    max_parts = max(1, math.ceil(FILES_PER_MILLION * hi["n"] / 1e6))
    return {
        "rss": verdict(rss_ok, x(f["driver_peak_rss_mb"], lf["driver_peak_rss_mb"]), vs),
        "first": verdict(None if first is None else first <= FIRST_FILE_MAX_S, f"{first} s"),
        "rate": verdict(rate_ok, x(*rate), vs),
        "done": verdict(done_s <= RERUN_MAX_S, f"{done_s:.0f} s"),
        "new": verdict(new_s <= new_limit, f"{new_s:.0f} s of {new_limit:.0f} s"),
        "parts": verdict(hi["output_files"] <= max_parts, f"{hi['output_files']} of {max_parts}"),
        "count": verdict(
            all(r["duckdb_distinct"] == r["n"] + r["new_files"] for r in runs.values()),
            "every size",
            "",
        ),
    }


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
PACKED_COLS = (  # (header, field of a form's scan)
    ("files", "rows"), ("errors", "files_error"), ("audio s", "audio_s"),
    ("first file s", "first_file_s"), ("wall_s", "wall_s"), ("audio s/s steady", "audio_s_per_s"),
    ("files/s steady", "files_per_s"), ("audio s/s whole run", "audio_s_per_wall_s"),
    ("× loose: audio s/s", "audio_s_per_s_ratio"), ("× loose: files/s", "files_per_s_ratio"),
    ("× loose: whole run", "audio_s_per_wall_s_ratio"),
)  # fmt: skip


def _field(run: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        run = run.get(key) if isinstance(run, dict) else None
    return run


def format_scale(runs: dict[int, dict[str, Any]], sizes: list[int]) -> str:
    checks = _checks(runs)
    cols = sorted(set(DEFAULT_SIZES) | set(sizes))
    rows = [
        [label, *(" / ".join(_fmt(_field(runs[n], p)) for p in paths) if n in runs else DASH
                  for n in cols), target, checks.get(key, DASH) if key else ""]
        for label, paths, target, key in SCALE_ROWS
    ]  # fmt: skip
    return table(["", *(_label(n) for n in cols), "target", "check"], rows)


def format_packed(res: dict[str, Any]) -> str:
    rows = []
    for name in ("loose", "parquet", "webdataset"):
        r = res[name]
        x = r.get("audio_s_per_s_ratio")
        check = (
            "" if name == "loose" else DASH if x is None else "met" if x >= PACKED_MIN else "MISSED"
        )
        rows.append([name, *(_fmt(r.get(f)) for _, f in PACKED_COLS), check])
    return table(["form", *(h for h, _ in PACKED_COLS), f"check (audio s/s ≥ {PACKED_MIN}×)"], rows)


def bench_scale(
    sizes: list[int],
    workdir: str | None = None,
    *,
    source: str = "manifest",
    cpus: int = 2,
    packed: bool = False,
    packed_clips: int = 2000,
    json_path: Path | None = None,
    warmup: bool = True,
) -> dict[str, Any]:
    """Run every size (and the packed comparison), print the tables, write the JSON."""
    load_before = os.getloadavg()
    runs: dict[int, dict[str, Any]] = {}
    res: dict[str, Any] = {"sizes": sizes}
    with workspace(workdir, "earmark-bench-scale-") as work:
        if warmup:
            res["warmup_s"] = warm_up(work, cpus)
            say(f"warm-up scan of {WARMUP_FILES} files: {res['warmup_s']:.1f} s (not counted)")
        for n in sizes:
            runs[n] = bench_size(work / f"n{n}", n, source, cpus)
        if packed:
            res["packed"] = bench_packed(work, packed_clips, cpus)
    res["conditions"] = _conditions(cpus, source, load_before)
    res["runs"] = {str(n): r for n, r in runs.items()}
    print("\n" + format_conditions(res["conditions"]))
    if sizes:
        res["checks"] = _checks(runs)
        print("\nearmark scan at archive scale\n" + format_scale(runs, sizes))
    if packed:
        print("\nPacked input vs loose files (same clips)\n" + format_packed(res["packed"]))
    if json_path is not None:
        json_path.write_text(json.dumps(res, indent=2, default=str))
    return res
