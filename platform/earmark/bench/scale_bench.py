"""Archive-scale benchmark (`earmark bench scale`): `earmark scan` on N tiny files, N = 10k,
100k, 1M, each run in its own `earmark scan` process (a fresh driver and embedded Ray).

Per size: the first scan (driver peak RSS, time to the first file's row, files/s at steady
state, wall time, committed output files and their median size), the rerun with everything
done, the rerun after 1 % new files (its files_ok must be that 1 %), and DuckDB counting the
distinct audio_id of the output (must be N + 1 %). Steady state is from the first row's arrival
at the driver to the end: (files_ok + files_error) / (wall_s - first_file_s). With `--packed`,
the same speech clips loose, in Parquet (HF struct) and in WebDataset tars are scanned, and the
decode throughput of the packed forms is compared with the loose files. With `--s3-objects`,
the same four measurements on that many tiny objects on a local SeaweedFS (see `scale_s3`).

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
from pathlib import Path
from typing import Any

from earmark.bench import scale_corpus as sc
from earmark.bench.common import conditions, format_conditions, ratio, say, table, workspace
from earmark.bench.scale_s3 import bench_s3, format_s3
from earmark.bench.scale_scan import (
    DASH,
    NEW_FRACTION,
    SCALE_ROWS,
    cell,
    duckdb_count,
    fmt,
    label,
    output_parts,
    scan,
)

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
RSS_GROWTH_MAX = 1.5  # driver peak RSS at the largest size ≤ this × at the smallest
FIRST_FILE_MAX_S = 30.0  # time to the first decoded file at 1M
RATE_MIN = 0.8  # files/s at the largest size ≥ this × at the smallest
RERUN_MAX_S = 60.0  # rerun with everything done (and with 1 % new, plus that 1 %'s time)
FILES_PER_MILLION = 100  # committed output files per 1M inputs, at most
PACKED_MIN = 0.9  # packed decode throughput ≥ this × loose
WARMUP_FILES = 20  # files of the untimed first scan


def bench_size(root: Path, n: int, source: str, cpus: int) -> dict[str, Any]:
    """The four measurements of one size (see the module docstring)."""
    corpus = sc.build_scale_corpus(root / "corpus", n)
    say(
        f"{label(n)}: corpus of {n} links {'reused' if corpus['reused'] else 'built'} "
        f"in {corpus['build_s']:.1f} s"
    )
    src = corpus["manifest"] if source == "manifest" else corpus["files"]
    out, log = root / "out", root / "scan.log"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    res: dict[str, Any] = {"n": n, "source": source, "corpus_build_s": corpus["build_s"]}
    say(f"{label(n)}: first scan")
    res["first"] = scan(src, out, cpus, log)
    res["output_files"], res["median_file_mb"] = output_parts(out)
    say(f"{label(n)}: rerun with everything done")
    res["rerun_done"] = scan(src, out, cpus, log)
    k = max(1, round(n * NEW_FRACTION))
    sc.add_new_files(root / "corpus", n, k)
    res["new_files"] = k
    say(f"{label(n)}: rerun with {k} new files")
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


def _checks(runs: dict[int, dict[str, Any]]) -> dict[str, str]:
    """Each target checked at the largest size run (against the smallest for the ratios)."""
    if not runs:
        return {}
    lo, hi = runs[min(runs)], runs[max(runs)]
    at = f"at {label(hi['n'])}"
    vs = at + (f" vs {label(lo['n'])}" if lo is not hi else "")

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


PACKED_COLS = (  # (header, field of a form's scan)
    ("files", "rows"), ("errors", "files_error"), ("audio s", "audio_s"),
    ("first file s", "first_file_s"), ("wall_s", "wall_s"), ("audio s/s steady", "audio_s_per_s"),
    ("files/s steady", "files_per_s"), ("audio s/s whole run", "audio_s_per_wall_s"),
    ("× loose: audio s/s", "audio_s_per_s_ratio"), ("× loose: files/s", "files_per_s_ratio"),
    ("× loose: whole run", "audio_s_per_wall_s_ratio"),
)  # fmt: skip


def format_scale(runs: dict[int, dict[str, Any]], sizes: list[int]) -> str:
    checks = _checks(runs)
    cols = sorted(set(DEFAULT_SIZES) | set(sizes))
    rows = [
        [name, *(cell(runs[n], paths) if n in runs else DASH for n in cols), target,
         checks.get(key, DASH) if key else ""]
        for name, paths, target, key in SCALE_ROWS
    ]  # fmt: skip
    return table(["", *(label(n) for n in cols), "target", "check"], rows)


def format_packed(res: dict[str, Any]) -> str:
    rows = []
    for name in ("loose", "parquet", "webdataset"):
        r = res[name]
        # whole runs: a tar shard is one decode task whose members all arrive when it ends, so
        # "steady state" (first row to the end) can be a fraction of a second for a packed form
        x = r.get("audio_s_per_wall_s_ratio")
        check = (
            "" if name == "loose" else DASH if x is None else "met" if x >= PACKED_MIN else "MISSED"
        )
        rows.append([name, *(fmt(r.get(f)) for _, f in PACKED_COLS), check])
    return table(["form", *(h for h, _ in PACKED_COLS), f"check (whole run ≥ {PACKED_MIN}×)"], rows)


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
    s3_objects: int = 0,
) -> dict[str, Any]:
    """Run every size (the packed comparison, the S3 prefix), print the tables, write the JSON."""
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
        if s3_objects:
            res["s3"] = bench_s3(work / f"s3-{s3_objects}", s3_objects, cpus)
    forms = [f"{source} of local links" if sizes else "", "packed shards" if packed else ""]
    forms.append(f"an S3 prefix of {s3_objects} objects" if s3_objects else "")
    res["conditions"] = _conditions(cpus, ", ".join(f for f in forms if f), load_before)
    res["runs"] = {str(n): r for n, r in runs.items()}
    print("\n" + format_conditions(res["conditions"]))
    if sizes:
        res["checks"] = _checks(runs)
        print("\nearmark scan at archive scale\n" + format_scale(runs, sizes))
    if packed:
        print("\nPacked input vs loose files (same clips)\n" + format_packed(res["packed"]))
    if s3_objects:
        print("\n" + format_s3(res["s3"]))
    if json_path is not None:
        json_path.write_text(json.dumps(res, indent=2, default=str))
    return res
