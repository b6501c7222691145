"""`earmark bench scale --s3-objects N`: the archive-scale measurements on an S3 prefix.

A SeaweedFS S3 server on 127.0.0.1 (earmark.testing.s3server) gets the N tiny files of the
local corpus (scale_corpus) as objects `audio/files/d…/f….wav|flac`, bulk-loaded with SeaweedFS's
own `weed filer.copy` (signed PUTs from Python take minutes for tens of thousands). Then the four
measurements of a local size: the first scan of `s3://audio/files`, the rerun with everything
done, the rerun after 1 % new objects (loaded the same way under `files/new/`), and DuckDB
counting the distinct audio_id of the output. Each scan is its own `earmark scan` process
reading as the server's read-only identity; the output stays on local disk. The corpus and the
loads are not timed (printed apart).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from earmark.bench import scale_corpus as sc
from earmark.bench.common import say, table
from earmark.bench.scale_scan import (
    NEW_FRACTION,
    SCALE_ROWS,
    cell,
    duckdb_count,
    label,
    output_parts,
    scan,
)
from earmark.testing.s3server import S3_READER, S3Server, filer_copy

BUCKET = "audio"
TITLE = "earmark scan of an S3 prefix (SeaweedFS on 127.0.0.1)"


def storage_args(server: S3Server) -> tuple[str, ...]:
    """`earmark scan` options reaching the server as its reader (list and read `audio` only)."""
    opts = {
        "key": S3_READER["key"],
        "secret": S3_READER["secret"],
        "client_kwargs.endpoint_url": server.endpoint,
    }
    return tuple(a for k, v in opts.items() for a in ("--storage-option", f"{k}={v}"))


def _load(server: S3Server, folder: Path, dest: str) -> float:
    """Seconds `weed filer.copy` takes to put `folder` under `dest` as `dest/<folder name>/…`."""
    t0 = time.perf_counter()
    filer_copy(server, folder, dest)
    return time.perf_counter() - t0


def bench_s3(root: Path, n: int, cpus: int) -> dict[str, Any]:
    """The four measurements of `n` objects on a fresh SeaweedFS under `root` (stopped after)."""
    corpus = sc.build_scale_corpus(root / "corpus", n)
    files: Path = corpus["files"]
    say(
        f"S3 {label(n)}: corpus of {n} links {'reused' if corpus['reused'] else 'built'} "
        f"in {corpus['build_s']:.1f} s"
    )
    shutil.rmtree(root / "seaweedfs", ignore_errors=True)  # a fresh store every run
    out, log = root / "out", root / "scan.log"
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    source = f"s3://{BUCKET}/{files.name}"
    res: dict[str, Any] = {"n": n, "source": "s3", "prefix": source}
    res["corpus_build_s"] = corpus["build_s"]
    server = S3Server(root / "seaweedfs")
    try:
        res["endpoint"] = server.endpoint
        res["upload_s"] = _load(server, files, BUCKET)
        say(f"S3 {label(n)}: {n} objects loaded in {res['upload_s']:.1f} s")
        args = storage_args(server)
        say(f"S3 {label(n)}: first scan of {source}")
        res["first"] = scan(source, out, cpus, log, *args)
        res["output_files"], res["median_file_mb"] = output_parts(out)
        say(f"S3 {label(n)}: rerun with everything done")
        res["rerun_done"] = scan(source, out, cpus, log, *args)
        k = max(1, round(n * NEW_FRACTION))
        sc.add_new_files(root / "corpus", n, k)
        # files/new/ goes to audio/files/new/: inside the prefix the scans read
        res["upload_new_s"] = _load(server, files / sc.NEW_DIR, f"{BUCKET}/{files.name}")
        res["new_files"] = k
        say(f"S3 {label(n)}: rerun with {k} new objects")
        res["rerun_new"] = scan(source, out, cpus, log, *args)
    finally:
        server.stop()
    res["final_output_files"], res["final_median_file_mb"] = output_parts(out)
    res["duckdb_distinct"], res["duckdb_s"] = duckdb_count(out)
    rate = res["first"]["files_per_s"]
    res["new_time_s"] = k / rate if rate else None  # that 1 % at the first run's steady rate
    return res


def format_s3(res: dict[str, Any]) -> str:
    """The local table's rows (no targets: they are set at 1M local files), plus the loads."""
    rows = [[name, cell(res, paths)] for name, paths, _, _ in SCALE_ROWS]
    loads = ("objects loaded s: N / the 1 % (not timed)", cell(res, ("upload_s", "upload_new_s")))
    rows.insert(1, list(loads))
    return TITLE + "\n" + table(["", f"{label(res['n'])} objects"], rows)
