"""`evaluate()`: read an earmark output and a reference manifest, match rows, score every task.

Matching: a reference row with a non-empty `audio_id` matches the output row with that id;
otherwise its `uri` matches the output row's `uri` after both are made canonical (a relative
reference path is resolved against the manifest's directory, `file://` is dropped, local paths are
made absolute and normalised). Output rows whose status is not `ok` are counted per error kind and
left out of the scores; reference rows with no output row are counted as missing.

Reference columns (each optional; a task is scored only when its column exists):
`text` → ASR against `transcript`; `labels` → tagging against `tags`/`tags_raw`; `caption` →
similarity against `caption`; `answer` → similarity against a custom answer (the one named
`answer_task`, else the row's first answer). `language` (or `lang`) picks the ASR normaliser and
the WER/CER choice; it defaults to `default_language`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from earmark import __version__
from earmark.contracts import JobError
from earmark.evaluation.reading import canonical_uri, manifest_base, read_output, read_references
from earmark.evaluation.similarity import SimilarityScore, score_similarity
from earmark.evaluation.tagging import TagScore, score_tags
from earmark.evaluation.wer import AsrScore, score_asr
from earmark.storage import Location, LocationLike

REFERENCE_COLUMNS = ("text", "labels", "caption", "answer")
# Columns `evaluate` reads from the output (transcripts etc.; never segments or meta).
EVAL_COLUMNS = (
    "audio_id",
    "uri",
    "status",
    "error_kind",
    "transcript",
    "caption",
    "tags",
    "tags_raw",
    "answers",
    "created_at",
)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _pick_answer(answers: list[dict[str, Any]] | None, name: str | None) -> str | None:
    if not answers:
        return None
    for a in answers:
        if name is None or a.get("name") == name:
            return a.get("text")
    return None


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------


class Coverage(BaseModel):
    """How references and output rows matched up."""

    match_key: str = Field(description="audio_id, uri, or audio_id+uri (mixed manifest)")
    n_references: int = Field(description="Reference rows")
    n_output_rows: int = Field(description="Output rows (after dropping duplicates)")
    n_matched: int = Field(description="References with an output row")
    n_missing: int = Field(description="References with no output row (not scored)")
    n_unreferenced: int = Field(description="Output rows with no reference")
    n_ok: int = Field(description="Matched rows with status ok (scored)")
    n_error: int = Field(description="Matched rows with status error (not scored)")
    n_skipped: int = Field(description="Matched rows with status skipped (not scored)")
    n_duplicate_outputs: int = Field(description="Extra output rows for the same file, dropped")
    error_kinds: dict[str, int] = Field(default_factory=dict, description="Matched errors by kind")
    error_rate: float | None = Field(default=None, description="n_error / n_matched")
    missing_rate: float | None = Field(default=None, description="n_missing / n_references")


class EvalResult(BaseModel):
    """Everything `earmark eval` reports; `metrics()` flattens it for thresholds."""

    output: str
    references: str
    evaluated_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    earmark_version: str = __version__
    coverage: Coverage
    asr: AsrScore | None = None
    tags: TagScore | None = None
    caption: SimilarityScore | None = None
    answer: SimilarityScore | None = None

    def metrics(self) -> dict[str, float | None]:
        """Flat metric names → values, as accepted by `check_thresholds`."""
        m: dict[str, float | None] = {
            "error_rate": self.coverage.error_rate,
            "missing_rate": self.coverage.missing_rate,
        }
        if self.asr:
            m["wer"], m["cer"] = self.asr.wer, self.asr.cer
            m["wer_both_nonempty"] = self.asr.words.rate_both_nonempty
            m["cer_both_nonempty"] = self.asr.chars.rate_both_nonempty
            n = self.asr.words.n_pairs + self.asr.chars.n_pairs
            empty = self.asr.words.n_empty_hyp + self.asr.chars.n_empty_hyp
            m["empty_hyp_rate"] = empty / n if n else None
            for lang, score in self.asr.per_language.items():
                m[f"{score.metric}.{lang}"] = score.rate
        if self.tags:
            m["map"], m["accuracy"] = self.tags.map, self.tags.accuracy
            m["tag_precision"], m["tag_recall"] = self.tags.precision, self.tags.recall
            m["tag_f1"] = self.tags.f1
        for name in ("caption", "answer"):
            sim = getattr(self, name)
            if sim:
                for key in ("token_f1", "rouge_l", "bleu"):
                    m[f"{name}_{key}"] = getattr(sim, key)
        return m


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def _rank(row: dict[str, Any]) -> tuple[bool, float]:
    when = row.get("created_at")
    return row.get("status") == "ok", when.timestamp() if isinstance(when, dt.datetime) else 0.0


def _dedupe(rows: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], int]:
    """One row per audio_id: an ok row beats a failed one, then the newest wins (resumed jobs)."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row.get("audio_id") or row.get("uri") or ""
        old = best.get(key)
        if old is None or _rank(row) >= _rank(old):
            best[key] = row
    return best, len(rows) - len(best)


def evaluate(
    output: LocationLike,
    references: LocationLike,
    default_language: str = "en",
    answer_task: str | None = None,
) -> EvalResult:
    """Score an earmark output against a reference manifest (see the module docstring); each
    is a Location, or a URL or path read without storage options."""
    output, references = Location.of(output), Location.of(references)
    refs = read_references(references)
    if not refs:
        raise JobError(f"reference manifest {references!r} has no rows")
    columns = set().union(*(r.keys() for r in refs))
    if "audio_id" not in columns and "uri" not in columns:
        raise JobError(f"reference manifest {references!r} needs a `uri` or `audio_id` column")
    tasks = [c for c in REFERENCE_COLUMNS if c in columns]
    if not tasks:
        raise JobError(
            f"reference manifest {references!r} has none of the columns {REFERENCE_COLUMNS}"
        )
    outputs, n_dup = _dedupe(read_output(output, EVAL_COLUMNS).to_pylist())
    by_id = {r["audio_id"]: r for r in outputs.values() if r.get("audio_id")}
    by_uri = {canonical_uri(r["uri"]): r for r in outputs.values() if r.get("uri")}
    base = manifest_base(references)

    used_keys: set[str] = set()
    matched: list[tuple[dict[str, Any], dict[str, Any]]] = []
    kinds_used: set[str] = set()
    seen: dict[tuple[str, str], int] = {}  # (key kind, key) → the reference row naming it
    for n, ref in enumerate(refs, 1):
        if not _is_blank(ref.get("audio_id")):
            value, kind = str(ref["audio_id"]).strip(), "audio_id"
            out = by_id.get(value)
        elif not _is_blank(ref.get("uri")):
            value, kind = canonical_uri(ref["uri"], base), "uri"
            out = by_uri.get(value)
        else:
            value, out, kind = "", None, "none"
        if kind != "none" and (kind, value) in seen:  # scored twice, or two texts for one file
            raise JobError(
                f"reference manifest {references.url}: rows {seen[(kind, value)]} and {n} "
                f"name the same file ({kind} {value}); keep one reference row per file"
            )
        seen[(kind, value)] = n
        kinds_used.add(kind)
        if out is not None:
            used_keys.add(out.get("audio_id") or out.get("uri"))
            matched.append((ref, out))

    status_counts = {"ok": 0, "error": 0, "skipped": 0}
    error_kinds: dict[str, int] = {}
    scored: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for ref, out in matched:
        status = out.get("status")
        if status is None:  # a foreign Parquet file in the folder: never count it as errors
            raise JobError(
                f"output {output.url}: the row for {out.get('uri')} has no status; the folder "
                "holds a Parquet file earmark did not write (remove it, or point at the folder "
                "`earmark run` wrote)"
            )
        status_counts[status] = status_counts.get(status, 0) + 1
        if status == "ok":
            scored.append((ref, out))
        elif status == "error":
            kind = out.get("error_kind") or "unknown"
            error_kinds[kind] = error_kinds.get(kind, 0) + 1

    coverage = Coverage(
        match_key="+".join(sorted(kinds_used - {"none"})) or "none",
        n_references=len(refs),
        n_output_rows=len(outputs),
        n_matched=len(matched),
        n_missing=len(refs) - len(matched),
        n_unreferenced=len(outputs) - len(used_keys),
        n_ok=status_counts["ok"],
        n_error=status_counts["error"],
        n_skipped=status_counts["skipped"],
        n_duplicate_outputs=n_dup,
        error_kinds=dict(sorted(error_kinds.items(), key=lambda kv: -kv[1])),
        error_rate=status_counts["error"] / len(matched) if matched else None,
        missing_rate=(len(refs) - len(matched)) / len(refs),
    )
    result = EvalResult(output=output.url, references=references.url, coverage=coverage)

    def lang(ref: dict[str, Any]) -> str:
        value = ref.get("language") or ref.get("lang")
        return default_language if _is_blank(value) else str(value)

    def key(ref: dict[str, Any], out: dict[str, Any]) -> str:
        return str(out.get("uri") or out.get("audio_id"))

    if "text" in tasks:
        result.asr = score_asr(
            (key(r, o), r.get("text"), o.get("transcript"), lang(r)) for r, o in scored
        )
    if "labels" in tasks:
        result.tags = score_tags(
            (r.get("labels"), o.get("tags"), o.get("tags_raw")) for r, o in scored
        )
    if "caption" in tasks:
        result.caption = score_similarity(
            (r.get("caption"), o.get("caption"), lang(r)) for r, o in scored
        )
    if "answer" in tasks:
        result.answer = score_similarity(
            (r.get("answer"), _pick_answer(o.get("answers"), answer_task), lang(r))
            for r, o in scored
        )
    return result
