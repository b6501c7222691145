"""Numbers behind the run report, computed from the output's Parquet files with pyarrow.

Only small columns are read for all rows; the long text columns are read for the few rows the
sample table shows, so a report over millions of rows stays within memory.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from earmark.evaluation.reading import output_dataset
from earmark.storage import LocationLike

STAT_COLUMNS = (
    "status",
    "error_stage",
    "error_kind",
    "duration_s",
    "source_sample_rate",
    "source_channels",
    "codec",
    "container",
    "tags",
    "created_at",
    "decode_s",
    "infer_s",
    "model",
    "job_id",
    "earmark_version",
)
# read when the output has them (schema version 2 and later)
QUALITY_COLUMNS = ("flags", "speech_s")
DURATION_BINS = 30
# Durations spanning more than this ratio (max/min) get logarithmic bins.
LOG_BINS_RATIO = 100.0
THROUGHPUT_MAX_POINTS = 60
# Bucket widths for the throughput series, seconds: the smallest giving ≤ THROUGHPUT_MAX_POINTS.
BUCKETS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
TOP_TAGS = 25
ERROR_EXAMPLES = 3


@dataclass
class RunStats:
    n_rows: int = 0
    status: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)  # stage, kind, count, examples
    durations: list[float] = field(default_factory=list)
    total_audio_s: float = 0.0
    total_decode_s: float = 0.0
    total_infer_s: float = 0.0
    codecs: dict[str, int] = field(default_factory=dict)
    containers: dict[str, int] = field(default_factory=dict)
    sample_rates: dict[str, int] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    tags: list[tuple[str, int]] = field(default_factory=list)
    n_tagged: int = 0
    n_distinct_tags: int = 0
    times: list[float] = field(default_factory=list)  # bucket centres, epoch seconds
    files_per_min: list[float] = field(default_factory=list)
    audio_s_per_s: list[float] = field(default_factory=list)
    bucket_s: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    models: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    flags: dict[str, int] = field(default_factory=dict)  # files per quality flag
    n_flagged: int = 0
    n_speech_measured: int = 0  # ok files with a speech measure
    n_no_speech: int = 0  # ...of which silero-vad found no speech at all
    total_speech_s: float = 0.0
    speech_audio_s: float = 0.0  # audio seconds of the files with a speech measure

    @property
    def wall_s(self) -> float | None:
        if self.first_at is None or self.last_at is None:
            return None
        return self.last_at - self.first_at


def _counts(col: pa.ChunkedArray, missing: str = "(unknown)") -> dict[str, int]:
    out: dict[str, int] = {}
    for item in pc.value_counts(col).to_pylist():
        key = missing if item["values"] is None else str(item["values"])
        out[key] = out.get(key, 0) + item["counts"]
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _float_sum(col: pa.ChunkedArray) -> float:
    v = pc.sum(col).as_py()
    return float(v) if v is not None else 0.0


def duration_bins(durations: list[float]) -> tuple[list[float], list[int], bool]:
    """Histogram edges and counts; logarithmic when durations span over two decades."""
    arr = np.asarray([d for d in durations if d is not None and math.isfinite(d) and d >= 0])
    if arr.size == 0:
        return [], [], False
    lo, hi = float(arr.min()), float(arr.max())
    positive = arr[arr > 0]
    log = positive.size == arr.size and hi / max(lo, 1e-9) > LOG_BINS_RATIO
    if log:
        edges = np.logspace(math.log10(lo), math.log10(hi * 1.0001), DURATION_BINS + 1)
    else:
        edges = np.linspace(0.0, hi if hi > 0 else 1.0, DURATION_BINS + 1)
    counts, edges = np.histogram(arr, bins=edges)
    return edges.tolist(), counts.tolist(), bool(log)


def _throughput(stats: RunStats, created: pa.ChunkedArray, durations: pa.ChunkedArray) -> None:
    """Files per minute and audio seconds per wall second, per time bucket of `created_at`."""
    mask = pc.is_valid(created)
    if not pc.any(mask).as_py():
        return
    ts = pc.cast(pc.filter(created, mask), pa.int64()).to_numpy() / 1e6  # µs → s
    dur = pc.fill_null(pc.filter(durations, mask), 0.0).to_numpy(zero_copy_only=False)
    t0, t1 = float(ts.min()), float(ts.max())
    stats.first_at, stats.last_at = t0, t1
    span = t1 - t0
    # Aim for ≥ ~3 files per bucket so a short run does not zig-zag between 0 and 1 file.
    points = min(THROUGHPUT_MAX_POINTS, max(1.0, len(ts) / 3))
    bucket = next((b for b in BUCKETS_S if span / b <= points), BUCKETS_S[-1])
    idx = ((ts - t0) // bucket).astype(np.int64)
    n = int(idx.max()) + 1
    files = np.bincount(idx, minlength=n)
    audio = np.bincount(idx, weights=np.nan_to_num(dur), minlength=n)
    stats.bucket_s = float(bucket)
    stats.times = [t0 + (i + 0.5) * bucket for i in range(n)]
    stats.files_per_min = (files * 60.0 / bucket).tolist()
    stats.audio_s_per_s = (audio / bucket).tolist()


def compute_stats(dataset: ds.Dataset) -> RunStats:
    """Every aggregate the report shows."""
    have = set(dataset.schema.names)
    t = dataset.to_table(columns=[*STAT_COLUMNS, *(c for c in QUALITY_COLUMNS if c in have)])
    s = RunStats(n_rows=t.num_rows)
    if not t.num_rows:
        return s
    s.status = _counts(t["status"])
    errored = pc.fill_null(pc.equal(t["status"], "error"), False)
    s.error_kinds = _counts(pc.filter(t["error_kind"], errored))
    ok = pc.fill_null(pc.equal(t["status"], "ok"), False)
    s.durations = [d for d in pc.filter(t["duration_s"], ok).to_pylist() if d is not None]
    s.total_audio_s = float(sum(s.durations))
    s.total_decode_s = _float_sum(t["decode_s"])
    s.total_infer_s = _float_sum(t["infer_s"])
    s.codecs = _counts(pc.filter(t["codec"], ok))
    s.containers = _counts(pc.filter(t["container"], ok))
    s.sample_rates = {
        (f"{int(k) / 1000:g} kHz" if k.isdigit() else k): v
        for k, v in _counts(pc.filter(t["source_sample_rate"], ok)).items()
    }
    s.channels = _counts(pc.filter(t["source_channels"], ok))
    tag_counter: Counter[str] = Counter()
    for tags in t["tags"].to_pylist():
        if tags:
            s.n_tagged += 1
            tag_counter.update(set(tags))
    s.n_distinct_tags = len(tag_counter)
    s.tags = tag_counter.most_common(TOP_TAGS)
    _throughput(s, t["created_at"], t["duration_s"])
    s.models = _counts(t["model"], "(none)")
    s.jobs = _counts(t["job_id"], "(none)")
    s.versions = _counts(t["earmark_version"], "(none)")
    s.errors = _error_table(dataset)
    _quality(s, t, ok)
    return s


def _quality(s: RunStats, t: pa.Table, ok: pa.ChunkedArray) -> None:
    """Files per quality flag, and how much of the audio silero-vad found to be speech."""
    if "flags" in t.column_names:
        flag_counter: Counter[str] = Counter()
        for flags in pc.filter(t["flags"], ok).to_pylist():
            if flags:
                s.n_flagged += 1
                flag_counter.update(set(flags))
        s.flags = dict(flag_counter.most_common())
    if "speech_s" in t.column_names:
        rows = pc.filter(t.select(["speech_s", "duration_s"]), ok).to_pylist()
        measured = [r for r in rows if r["speech_s"] is not None and r["duration_s"]]
        s.n_speech_measured = len(measured)
        s.n_no_speech = sum(1 for r in measured if r["speech_s"] == 0)
        s.total_speech_s = float(sum(r["speech_s"] for r in measured))
        s.speech_audio_s = float(sum(r["duration_s"] for r in measured))


def _error_table(dataset: ds.Dataset) -> list[dict[str, Any]]:
    """(stage, kind) groups of failed rows with counts and a few example messages."""
    rows = dataset.to_table(
        columns=["uri", "error_stage", "error_kind", "error"],
        filter=pc.field("status") == "error",
    ).to_pylist()
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["error_stage"] or "?", r["error_kind"] or "?")
        g = groups.setdefault(key, {"stage": key[0], "kind": key[1], "count": 0, "examples": []})
        g["count"] += 1
        if len(g["examples"]) < ERROR_EXAMPLES:
            g["examples"].append((r["uri"] or "", r["error"] or ""))
    return sorted(groups.values(), key=lambda g: -g["count"])


def sample_rows(dataset: ds.Dataset, n: int) -> list[dict[str, Any]]:
    """Up to `n` rows for the table: some failures first, the rest spread evenly over ok rows."""
    status = dataset.to_table(columns=["status"])["status"]
    all_idx = np.arange(len(status))
    not_ok = all_idx[~pc.fill_null(pc.equal(status, "ok"), False).to_numpy(zero_copy_only=False)]
    ok = np.setdiff1d(all_idx, not_ok)
    failures = not_ok[: max(n // 5, min(len(not_ok), n - len(ok)))]
    rest = n - len(failures)
    if len(ok) > rest:
        ok = ok[np.linspace(0, len(ok) - 1, rest).round().astype(np.int64)] if rest > 0 else ok[:0]
    chosen = np.concatenate([failures, ok]).astype(np.int64)
    if not len(chosen):
        return []
    return dataset.take(pa.array(chosen)).to_pylist()


def open_output(output: LocationLike) -> ds.Dataset:
    return output_dataset(output)
