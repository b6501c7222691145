"""End-of-job summary: counts, hours, realtime factors, padding, errors by kind."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field


class JobSummary(BaseModel):
    job_id: str = Field(description="Job id")
    files_listed: int = Field(description="Files in the source")
    files_done_before: int = Field(description="Files skipped because the output already had them")
    files_ok: int = Field(default=0, description="Rows with status ok written by this run")
    files_error: int = Field(default=0, description="Rows with status error written by this run")
    audio_hours: float = Field(default=0.0, description="Hours of audio decoded by this run")
    wall_s: float = Field(default=0.0, description="Wall seconds of this run")
    audio_hours_per_wall_hour: float = Field(default=0.0, description="Overall realtime factor")
    decode_realtime_factor: float | None = Field(
        default=None, description="Audio seconds per decode-worker second"
    )
    infer_realtime_factor: float | None = Field(
        default=None, description="Audio seconds per model-worker second"
    )
    padding_fraction: float | None = Field(
        default=None, description="Share of padded samples in model batches"
    )
    errors_by_kind: dict[str, int] = Field(default_factory=dict, description="stage/kind → count")
    duplicates_removed: int = Field(default=0, description="Duplicate rows repaired at the end")
    rows_superseded: int = Field(
        default=0, description="Old rows of files that changed since, replaced by their new row"
    )
    errors_retried: int = Field(
        default=0, description="Error rows annotated again by this run (--retry-errors)"
    )
    errors_now_ok: int = Field(default=0, description="Of those, files whose new row is ok")
    fatal_failures: int = Field(
        default=0,
        description="Fatal failures (device, crashed process) of the model and of "
        "decode tasks; never rows",
    )
    annotator_restarts: int = Field(
        default=0, description="Annotator processes Ray restarted after a fatal failure"
    )
    files_quarantined: int = Field(
        default=0,
        description="Files given an infer/model_crash or decode/decoder_crash row after their "
        "attempts",
    )
    output_rows: int = Field(default=0, description="Rows in the whole output after this run")
    output_ok: int = Field(default=0, description="Rows with status ok in the whole output")
    output_files: int = Field(default=0, description="Committed Parquet files in the output")
    first_file_s: float | None = Field(
        default=None, description="Seconds from the start until the first file's row came back"
    )
    driver_peak_rss_mb: float | None = Field(
        default=None, description="Peak resident memory of the driver process, MiB"
    )

    def add(self, rows: list[dict[str, Any]], acc: dict[str, float]) -> None:
        """Fold a batch of summary rows in; `acc` holds running sums."""
        kinds = Counter(self.errors_by_kind)
        for r in rows:
            if r["status"] == "ok":
                self.files_ok += 1
            else:
                self.files_error += 1
                kinds[f"{r['error_stage']}/{r['error_kind']}"] += 1
            d = r.get("duration_s") or 0.0
            acc["audio_s"] += d
            acc["decode_s"] += r.get("decode_s") or 0.0
            acc["infer_s"] += r.get("infer_s") or 0.0
            acc["infer_audio_s"] += d if r.get("infer_s") else 0.0
            acc["pad_real"] += r.get("_pad_real") or 0
            acc["pad_total"] += r.get("_pad_total") or 0
        self.errors_by_kind = dict(kinds)

    def add_failures(self, decode: dict[str, Any], model: dict[str, Any] | None) -> None:
        """Counts from the job's attempt ledgers (earmark.annotate.failures)."""
        self.fatal_failures = int(decode["fatal_failures"])
        self.files_quarantined = int(decode["files_quarantined"])
        if model is not None:
            self.fatal_failures += int(model["fatal_failures"])
            self.files_quarantined += int(model["files_quarantined"])
            self.annotator_restarts = int(model["annotator_restarts"])

    def finish(self, acc: dict[str, float], wall_s: float) -> None:
        self.wall_s = wall_s
        self.audio_hours = acc["audio_s"] / 3600
        self.audio_hours_per_wall_hour = acc["audio_s"] / wall_s if wall_s > 0 else 0.0
        if acc["decode_s"] > 0:
            self.decode_realtime_factor = acc["audio_s"] / acc["decode_s"]
        if acc["infer_s"] > 0:
            self.infer_realtime_factor = acc["infer_audio_s"] / acc["infer_s"]
        if acc["pad_total"] > 0:
            self.padding_fraction = max(0.0, 1 - acc["pad_real"] / acc["pad_total"])

    def table_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs, as the CLI's table and a submitted job's log show them."""
        rows: list[tuple[str, str]] = []
        rows.append(("files listed", str(self.files_listed)))
        rows.append(("already done (skipped)", str(self.files_done_before)))
        rows.append(("ok / error", f"{self.files_ok} / {self.files_error}"))
        rows.append(("audio", f"{self.audio_hours:.3f} h"))
        rows.append(("wall", f"{self.wall_s:.1f} s"))
        rows.append(("throughput", f"{self.audio_hours_per_wall_hour:.1f} audio-h per wall-h"))
        if self.decode_realtime_factor:
            rows.append(("decode speed", f"{self.decode_realtime_factor:.0f}× realtime per worker"))
        if self.infer_realtime_factor:
            rows.append(("model speed", f"{self.infer_realtime_factor:.1f}× realtime per actor"))
        if self.padding_fraction is not None:
            rows.append(("padding", f"{100 * self.padding_fraction:.1f}% of model input"))
        for k, v in sorted(self.errors_by_kind.items()):
            rows.append((f"error {k}", str(v)))
        if self.errors_retried:
            rows.append(
                ("errors retried / now ok", f"{self.errors_retried} / {self.errors_now_ok}")
            )
        if self.fatal_failures:
            rows.append(
                (
                    "fatal failures",
                    f"{self.fatal_failures} ({self.annotator_restarts} Annotator restarts, "
                    f"{self.files_quarantined} files quarantined)",
                )
            )
        rows.append(("output rows (ok)", f"{self.output_rows} ({self.output_ok})"))
        return rows

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2)


def new_acc() -> dict[str, float]:
    return dict.fromkeys(
        ("audio_s", "decode_s", "infer_s", "infer_audio_s", "pad_real", "pad_total"), 0.0
    )
