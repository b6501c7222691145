"""Decoded files: a listing row → a decoded row (probe fields, and the file's model windows
with features prepared on the CPU), the step before the Annotator in the batch job and in
`earmark annotate`. Per-file failures become error rows; nothing raises out of a group.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from earmark import __version__
from earmark.annotate.packed import member_rows
from earmark.audio.decode import decode_audio
from earmark.audio.fetch import prefetch_small, read_and_decode
from earmark.contracts import OUTPUT_SCHEMA, EarmarkError, ErrorKind, ErrorStage, LimitsSpec
from earmark.storage import Location

# Rows travel between stages with the output columns plus the pickled windows and padding counts.
WORK_SCHEMA = (
    OUTPUT_SCHEMA.append(pa.field("payload", pa.large_binary()))
    .append(pa.field("_pad_real", pa.int64()))
    .append(pa.field("_pad_total", pa.int64()))
)


def probe_fields(audio: Any) -> dict[str, Any]:
    """The row fields a decode tells (the batch job's and Serve's rows alike)."""
    return {
        "duration_s": audio.duration_s,
        "source_sample_rate": audio.source_sample_rate,
        "source_channels": audio.source_channels,
        "codec": audio.codec,
        "container": audio.container,
        "decode_s": audio.decode_s,
    }


def error_fields(err: EarmarkError) -> dict[str, Any]:
    return {
        "status": "error",
        "error_stage": str(err.stage),
        "error_kind": str(err.kind),
        "error": err.message,
    }


class DecodeStage:
    """listing rows → decoded rows (probe fields; windows with prepared features when a model
    family is given). Per-file failures become error rows; nothing raises out of a batch."""

    def __init__(
        self,
        limits: LimitsSpec | dict,
        source: Location | None,
        job_id: str,
        family: str | None = None,
        ledger: Any = None,
        skip: tuple[Any, Any, Any] | None = None,
        engine: str = "hf",
    ) -> None:
        self.limits = limits if isinstance(limits, LimitsSpec) else LimitsSpec(**limits)
        self.source = source  # the files' filesystem and options (None: each URI alone)
        self.job_id = job_id
        self.ledger = ledger  # batch job: decode attempts across crashed processes
        # batch job: (done ids, retry ids, tally) to skip the done members of tar shards, whose
        # members are only known once the shard is read (earmark.batch.listing)
        self.skip = skip
        self.model_cls = None
        if family is not None:
            from earmark.models.registry import model_class

            # class only: prepare() needs no weights (the engine decides the features)
            self.model_cls = model_class(family, engine)

    def _base_row(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The fields every row of a listed file has, whatever happens to it."""
        return {
            "audio_id": rec["audio_id"],
            "uri": rec["uri"],
            "size_bytes": rec.get("size_bytes"),
            "meta": rec.get("meta"),
            "job_id": self.job_id,
            "earmark_version": __version__,
            "status": "ok",
        }

    def decode_one(self, rec: dict[str, Any], data: bytes | None = None) -> dict[str, Any]:
        """The decoded row of one listed file, or of a packed member whose bytes are `data`."""
        row = self._base_row(rec)
        if rec.get("list_error"):
            le = rec["list_error"]
            row.update(status="error", error_stage=str(le.get("stage") or ErrorStage.LIST))
            row.update(error_kind=le["kind"], error=le["message"])
            return row
        keep = self.model_cls is not None
        try:
            if data is not None:
                if not data:
                    raise EarmarkError(
                        ErrorStage.READ, ErrorKind.EMPTY_FILE, f"{rec['uri']} is empty (0 bytes)"
                    )
                audio = decode_audio(
                    data,
                    what=rec["uri"],
                    max_duration_s=self.limits.max_duration_s,
                    keep_samples=keep,
                )
            else:
                audio = read_and_decode(
                    rec["uri"],
                    rec.get("size_bytes"),
                    self.limits,
                    self.source,
                    keep_samples=keep,
                )
        except EarmarkError as err:
            row.update(error_fields(err))
            return row
        except Exception as exc:  # a decoder bug must cost one row, not the job
            row.update(
                error_fields(
                    EarmarkError(
                        ErrorStage.DECODE, ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"
                    )
                )
            )
            return row
        row.update(probe_fields(audio))
        if self.model_cls is not None:
            try:
                from earmark.audio.segment import make_windows

                windows = make_windows(rec["audio_id"], audio.samples, self.model_cls)
            except Exception as exc:
                row.update(
                    error_fields(
                        EarmarkError(
                            ErrorStage.SEGMENT, ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}"
                        )
                    )
                )
                return row
            row["num_windows"] = len(windows)
            row["payload"] = pickle.dumps(windows, protocol=pickle.HIGHEST_PROTOCOL)
        return row

    def decode_group(self, recs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Decoded rows of a group of listing rows, in order. With a ledger, a group some of
        whose files crashed a decode process before goes file by file, and a file that keeps
        crashing it becomes a decode/decoder_crash row (earmark.annotate.failures)."""
        if any(r.get("packed") for r in recs):
            yield from self._decode_packed(recs)
            return
        if self.ledger is None:
            yield from self._decode_all(recs)
            return
        tried = self.ledger.attempts([r["audio_id"] for r in recs])
        if not tried:
            token = self.ledger.begin([r["audio_id"] for r in recs])
            yield from self._decode_all(recs)  # streamed: one decoded file held at a time
            self.ledger.succeed(token)
            return
        for rec in recs:
            why = self.ledger.may_quarantine(rec["audio_id"]) if rec["audio_id"] in tried else None
            if why:
                yield self._crash_row(rec, why)
                continue
            token = self.ledger.begin([rec["audio_id"]])
            row = self.decode_one(rec)
            self.ledger.succeed(token)
            yield row

    def _decode_all(self, recs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Decoded rows in order; small files in an object store are fetched together first."""
        fetched = prefetch_small(recs, self.limits, self.source)
        for rec in recs:
            yield self.decode_one(rec, fetched.pop(rec["uri"], None))

    def _decode_packed(self, recs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Members of packed shards, read straight from the shard's bytes (no temp files)."""
        loose = [r for r in recs if not r.get("packed")]
        yield from map(self.decode_one, loose)
        for rec, data in member_rows(
            [r for r in recs if r.get("packed")], self.limits, self.source, self.skip
        ):
            yield self.decode_one(rec, data)

    def _crash_row(self, rec: dict[str, Any], why: str) -> dict[str, Any]:
        row = self._base_row(rec)
        row.update(error_fields(EarmarkError(ErrorStage.DECODE, ErrorKind.DECODER_CRASH, why)))
        return row

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = [self.decode_one(rec) for rec in batch.to_pylist()]
        return to_work_table(rows)


def to_work_table(rows: list[dict[str, Any]]) -> pa.Table:
    cols = {name: [r.get(name) for r in rows] for name in WORK_SCHEMA.names}
    cols["meta"] = [list(m.items()) if isinstance(m, dict) else m for m in cols["meta"]]
    return pa.table(cols, schema=WORK_SCHEMA)
