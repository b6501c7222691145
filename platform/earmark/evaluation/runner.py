"""`evaluate()` and `evaluate_predictions()`: read an earmark output (or a predictions file made
elsewhere) and a reference manifest, match rows, score every task.

Matching: a reference row with a non-empty `audio_id` matches the output row with that id;
otherwise its `uri` matches the output row's `uri` after both are made canonical (`file://` is
dropped, local paths are made absolute and normalised). A relative reference uri is resolved
against the manifest's folder. A relative output uri (a job run from another folder wrote
"data/a.wav") is resolved against `output_base` when one is given, and refused otherwise: the
folder it was relative to is not recorded, and resolving it against the folder `earmark eval`
runs in would match the wrong files or none. Output rows whose status is not `ok` are counted per
error kind and left out of the scores; reference rows with no output row are counted as missing.

Reference columns (each optional; a task is scored only when its column exists):
`text` → ASR against `transcript`; `labels` → tagging against `tags`/`tags_raw`; `caption` →
similarity against `caption`; `answer` → a custom answer (the one named `answer_task`, else the
row's first answer), scored as multiple-choice accuracy on rows that have `choices` and as
similarity on the others. `language` (or `lang`) picks the ASR normaliser and the WER/CER
choice; it defaults to `default_language`. `labels` and `choices` are read up front: a cell that
cannot be read is refused with its row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from earmark import __version__
from earmark.contracts import JobError
from earmark.evaluation.choices import ChoiceScore, answer_index, read_choices, score_choices
from earmark.evaluation.reading import (
    ANSWER_KEY,
    ROW_KEY,
    SOURCE_KEY,
    canonical_uri,
    is_relative_uri,
    manifest_base,
    read_output_rows,
    read_predictions,
    read_references,
)
from earmark.evaluation.similarity import SimilarityScore, score_similarity
from earmark.evaluation.tagging import LIST_FIX, TagScore, parse_labels, score_tags
from earmark.evaluation.wer import AsrScore, score_asr
from earmark.storage import Location, LocationLike

REFERENCE_COLUMNS = ("text", "labels", "caption", "answer")
# Reference column → the task name of `reading.PREDICTION_COLUMNS` that answers it.
PREDICTION_TASK = {"text": "asr", "labels": "tags", "caption": "caption", "answer": "answer"}
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


def _pick_answer(out: dict[str, Any], name: str | None) -> str | None:
    if ANSWER_KEY in out:  # a predictions row: one answer text
        return out[ANSWER_KEY]
    answers = out.get("answers")
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

    output: str = Field(description="The output folder, or the predictions file")
    references: str
    source: str = Field(default="output", description="'output' (earmark) or 'predictions'")
    prediction_columns: dict[str, str] = Field(
        default_factory=dict, description="Predictions file: task → the column scored for it"
    )
    evaluated_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    earmark_version: str = __version__
    coverage: Coverage
    asr: AsrScore | None = None
    tags: TagScore | None = None
    caption: SimilarityScore | None = None
    answer: SimilarityScore | None = None
    choices: ChoiceScore | None = None

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
        if self.choices:
            m["choice_accuracy"] = self.choices.accuracy
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


def _reference_error(url: str, n: int, column: str, value: Any, why: str) -> JobError:
    return JobError(f"reference manifest {url}: row {n}: {column} {value!r} cannot be read: {why}")


def _prepare_references(refs: list[dict[str, Any]], url: str) -> None:
    """Read every `labels` and `choices` cell now, so that one that cannot be read stops the run
    with its row (scoring would only meet the matched rows, and later). Parsed values are
    stored back: `labels` as a list, `_choices` and `_choice` (the right option's index)."""
    for n, ref in enumerate(refs, 1):
        if not _is_blank(ref.get("labels")):
            try:
                ref["labels"] = parse_labels(ref["labels"])
            except ValueError as exc:
                raise _reference_error(url, n, "labels", ref["labels"], str(exc)) from None
        if _is_blank(ref.get("choices")):
            continue
        try:
            choices = read_choices(ref["choices"])
        except ValueError as exc:
            raise _reference_error(url, n, "choices", ref["choices"], str(exc)) from None
        if len(choices) < 2:
            raise _reference_error(
                url, n, "choices", ref["choices"], f"it holds {len(choices)} option(s); {LIST_FIX}"
            )
        right = None
        if not _is_blank(ref.get("answer")):
            try:
                right = answer_index(ref["answer"], choices)
            except ValueError as exc:
                raise JobError(f"reference manifest {url}: row {n}: {exc}") from None
        ref["_choices"], ref["_choice"] = choices, right


def _load_references(references: Location) -> tuple[list[dict[str, Any]], list[str]]:
    """Reference rows (labels and choices read) and the tasks their columns ask for."""
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
    _prepare_references(refs, references.url)
    return refs, tasks


def _reference_keys(refs: list[dict[str, Any]], references: Location) -> list[tuple[str, str]]:
    """(key kind, key) of each reference row: ("audio_id", id), ("uri", canonical uri resolved
    against the manifest's folder) or ("none", ""); one file named twice is refused."""
    base = manifest_base(references)
    keys: list[tuple[str, str]] = []
    seen: dict[tuple[str, str], int] = {}  # (key kind, key) → the reference row naming it
    for n, ref in enumerate(refs, 1):
        if not _is_blank(ref.get("audio_id")):
            key = ("audio_id", str(ref["audio_id"]).strip())
        elif not _is_blank(ref.get("uri")):
            key = ("uri", canonical_uri(ref["uri"], base))
        else:
            key = ("none", "")
        if key[0] != "none" and key in seen:  # scored twice, or two texts for one file
            raise JobError(
                f"reference manifest {references.url}: rows {seen[key]} and {n} "
                f"name the same file ({key[0]} {key[1]}); keep one reference row per file"
            )
        seen[key] = n
        keys.append(key)
    return keys


def _uri_index(rows: list[dict[str, Any]], output_base: str | None) -> dict[str, dict[str, Any]]:
    """Output rows by canonical uri; a relative uri is resolved against `output_base` and
    refused without one (never against the folder eval runs in: that matches nothing, or the
    wrong files)."""
    index: dict[str, dict[str, Any]] = {}
    for row in rows:
        uri = row.get("uri")
        if not uri:
            continue
        if output_base is None and is_relative_uri(uri):
            raise JobError(
                f"{row.get(SOURCE_KEY)}: row {row.get(ROW_KEY)}: uri {uri!r} is relative and "
                "the folder it is relative to is not recorded; pass --output-base DIR (where "
                "the job ran, or the folder the paths start from) to resolve such uris there, or "
                "write absolute uris"
            )
        index[canonical_uri(uri, output_base)] = row
    return index


def _score(
    rows: list[dict[str, Any]],
    *,
    n_duplicates: int,
    refs: list[dict[str, Any]],
    tasks: list[str],
    references: Location,
    result_fields: dict[str, Any],
    default_language: str,
    answer_task: str | None,
    output_base: str | None,
) -> EvalResult:
    """Match output-shaped `rows` to the reference rows and score every task."""
    keys = _reference_keys(refs, references)
    outputs = {r.get("audio_id") or r.get("uri") or "": r for r in rows}
    by_id = {r["audio_id"]: r for r in rows if r.get("audio_id")}
    # built only when some reference names a uri: ids alone never need the output's uris
    by_uri = _uri_index(rows, output_base) if any(k == "uri" for k, _ in keys) else {}
    used_keys: set[str] = set()
    matched: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for ref, (kind, value) in zip(refs, keys, strict=True):
        out = by_id.get(value) if kind == "audio_id" else by_uri.get(value)
        if kind != "none" and out is not None:
            used_keys.add(out.get("audio_id") or out.get("uri"))
            matched.append((ref, out))
    kinds_used = {k for k, _ in keys}

    status_counts = {"ok": 0, "error": 0, "skipped": 0}
    error_kinds: dict[str, int] = {}
    scored: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for ref, out in matched:
        status = out.get("status")
        if status is None:  # a foreign Parquet file in the folder: never count it as errors
            raise JobError(
                f"output {result_fields['output']}: the row for {out.get('uri')} has no status; "
                "the folder holds a Parquet file earmark did not write (remove it, or point at "
                "the folder `earmark run` wrote)"
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
        n_duplicate_outputs=n_duplicates,
        error_kinds=dict(sorted(error_kinds.items(), key=lambda kv: -kv[1])),
        error_rate=status_counts["error"] / len(matched) if matched else None,
        missing_rate=(len(refs) - len(matched)) / len(refs),
    )
    result = EvalResult(references=references.url, coverage=coverage, **result_fields)

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
        mc = [(r, o) for r, o in scored if "_choices" in r]
        open_ended = [(r, o) for r, o in scored if "_choices" not in r]
        if mc:
            result.choices = score_choices(
                (r["_choices"], r["_choice"], _pick_answer(o, answer_task)) for r, o in mc
            )
        # similarity only where some row asks an open question (not in a choices-only set)
        if not any("_choices" in r for r in refs) or any(
            not _is_blank(r.get("answer")) for r, _ in open_ended
        ):
            result.answer = score_similarity(
                (r.get("answer"), _pick_answer(o, answer_task), lang(r)) for r, o in open_ended
            )
    return result


def evaluate(
    output: LocationLike,
    references: LocationLike,
    default_language: str = "en",
    answer_task: str | None = None,
    output_base: str | None = None,
) -> EvalResult:
    """Score an earmark output against a reference manifest (see the module docstring); each
    is a Location, or a URL or path read without storage options. `output_base` is the folder
    relative output uris are resolved against."""
    output, references = Location.of(output), Location.of(references)
    refs, tasks = _load_references(references)
    rows, n_dup = _dedupe(read_output_rows(output, EVAL_COLUMNS))
    return _score(
        list(rows.values()),
        n_duplicates=n_dup,
        refs=refs,
        tasks=tasks,
        references=references,
        result_fields={"output": output.url, "source": "output"},
        default_language=default_language,
        answer_task=answer_task,
        output_base=output_base,
    )


def evaluate_predictions(
    predictions: LocationLike,
    references: LocationLike,
    default_language: str = "en",
    output_base: str | None = None,
) -> EvalResult:
    """Score a predictions file made outside earmark (`.jsonl`, `.csv`, `.parquet` with a
    `uri` and a `text` column, see `reading.read_predictions`) against a reference manifest,
    with the same matching and metrics as `evaluate`. Every row counts as status ok; only the
    tasks the file has a column for are scored (`prediction_columns` of the result says which)."""
    predictions, references = Location.of(predictions), Location.of(references)
    refs, tasks = _load_references(references)
    rows, columns = read_predictions(predictions)
    # a task the file has no column for is left out, not scored as all-empty answers
    used = {
        PREDICTION_TASK[t]: columns[PREDICTION_TASK[t]]
        for t in tasks
        if PREDICTION_TASK[t] in columns
    }
    if not used:
        raise JobError(
            f"predictions file {predictions.url} has no column for what the references score "
            f"({', '.join(tasks)}); its text columns: {', '.join(sorted(set(columns.values())))}"
        )
    tasks = [t for t in tasks if PREDICTION_TASK[t] in used]
    return _score(
        rows,
        n_duplicates=0,  # refused while reading: two predictions for one file
        refs=refs,
        tasks=tasks,
        references=references,
        result_fields={
            "output": predictions.url,
            "source": "predictions",
            "prediction_columns": used,
        },
        default_language=default_language,
        answer_task=None,  # a predictions row holds one answer
        output_base=output_base,
    )
