"""Presenting an EvalResult: rich tables in the terminal, a JSON file, and CI thresholds."""

from __future__ import annotations

import re
from typing import Any

from earmark.evaluation.runner import EvalResult
from earmark.storage import Location, LocationLike

# `name=0.2` / `name<=0.2`: fail when the metric is above; `name>=0.5`: fail when below.
_THRESHOLD = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(<=|>=|=)\s*([-+0-9.eE]+)\s*$")


def parse_threshold(text: str) -> tuple[str, str, float]:
    """`wer=0.2` → ("wer", "<=", 0.2); raise ValueError naming the accepted forms."""
    m = _THRESHOLD.match(text)
    if not m:
        raise ValueError(
            f"threshold {text!r} must be written NAME=VALUE (fail above), NAME<=VALUE "
            "(same) or NAME>=VALUE (fail below), e.g. wer=0.2 or map>=0.3"
        )
    name, op, value = m.groups()
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"threshold {text!r}: {value!r} is not a number") from None
    return name.lower(), "<=" if op == "=" else op, number


def check_thresholds(result: EvalResult, thresholds: list[str]) -> list[str]:
    """Readable violations of `thresholds` (empty when all hold).

    A threshold on a metric that was not computed (no references for it, or nothing scored) is a
    violation too: a CI gate must not pass because the data it guards went missing. A name that
    no result could ever have raises ValueError.
    """
    metrics = result.metrics()
    violations: list[str] = []
    for text in thresholds:
        name, op, limit = parse_threshold(text)
        if name not in metrics:
            if not _could_exist(name):
                known = ", ".join(sorted(metrics))
                raise ValueError(f"unknown metric {name!r} in {text!r}; this result has: {known}")
            violations.append(f"{name} was not computed (threshold {text})")
            continue
        value = metrics[name]
        if value is None:
            violations.append(f"{name} was not computed (threshold {text})")
        elif op == "<=" and value > limit:
            violations.append(f"{name} = {value:.4f} is above {limit:g}")
        elif op == ">=" and value < limit:
            violations.append(f"{name} = {value:.4f} is below {limit:g}")
    return violations


_KNOWN = re.compile(
    r"^(error_rate|missing_rate|wer|cer|wer_both_nonempty|cer_both_nonempty|empty_hyp_rate|"
    r"(wer|cer)\.[a-z0-9-]+|map|accuracy|tag_precision|tag_recall|tag_f1|"
    r"(caption|answer)_(token_f1|rouge_l|bleu)|choice_accuracy)$"
)


def _could_exist(name: str) -> bool:
    return bool(_KNOWN.match(name))


def write_json(result: EvalResult, path: LocationLike) -> None:
    """Write the full result (every count and per-language score) as indented JSON."""
    target = Location.of(path)
    fs, fpath = target.fs, target.path
    parent = fpath.rsplit("/", 1)[0] if "/" in fpath else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(fpath, "w", encoding="utf-8") as f:
        f.write(result.model_dump_json(indent=2))
        f.write("\n")


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}%" if pct else f"{value:.3f}"


def print_result(result: EvalResult, console: Any = None) -> None:
    """Print coverage and every computed score as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    cov = result.coverage
    if result.prediction_columns:
        used = ", ".join(f"{task} ← `{col}`" for task, col in result.prediction_columns.items())
        console.print(f"predictions file {result.output}: columns scored: {used}")
    t = Table(title="Coverage", title_justify="left")
    for col in ("references", "matched", "missing", "ok", "error", "skipped", "unreferenced"):
        t.add_column(col, justify="right")
    t.add_row(
        *map(
            str,
            (
                cov.n_references,
                cov.n_matched,
                cov.n_missing,
                cov.n_ok,
                cov.n_error,
                cov.n_skipped,
                cov.n_unreferenced,
            ),
        )
    )
    console.print(t)
    if cov.error_kinds:
        kinds = ", ".join(f"{k}: {v}" for k, v in cov.error_kinds.items())
        console.print(f"errors by kind (not scored): {kinds}")

    if result.asr:
        t = Table(
            title="ASR (Whisper normalisers; corpus rate)",
            title_justify="left",
            caption="rate_ne: only pairs with both sides non-empty (reference recipe); "
            "∅: empty after normalisation",
            caption_justify="left",
        )
        for col in ("lang", "metric", "rate", "rate_ne", "pairs", "ref_tok",
                    "S", "D", "I", "∅ref", "∅hyp"):  # fmt: skip
            t.add_column(col, justify="left" if col in ("lang", "metric") else "right")
        per = list(result.asr.per_language.values())
        for s in [result.asr.words, result.asr.chars, *per]:
            # An "all" row only adds information over two or more languages of its metric.
            same_metric = sum(1 for p in per if p.metric == s.metric)
            if not s.n_pairs or (s.language == "all" and same_metric < 2):
                continue
            t.add_row(
                s.language, s.metric.upper(), _fmt(s.rate, True), _fmt(s.rate_both_nonempty, True),
                str(s.n_pairs), str(s.ref_tokens), str(s.substitutions), str(s.deletions),
                str(s.insertions), str(s.n_empty_ref), str(s.n_empty_hyp),
            )  # fmt: skip
        console.print(t)
        for s in (result.asr.words, result.asr.chars):
            if s.n_empty_ref:
                console.print(
                    f"{s.n_empty_ref} pair(s) with an empty reference are outside the {s.metric}; "
                    f"their hypotheses hold {s.empty_ref_insertions} token(s)."
                )
        if result.asr.worst:
            w = Table(title="Highest-error rows (normalised text)", title_justify="left")
            for col in ("file", "errors", "reference", "hypothesis"):
                w.add_column(col, overflow="fold")
            for e in result.asr.worst[:5]:
                w.add_row(
                    e.key, f"{e.errors}/{e.ref_tokens}", e.reference[:200], e.hypothesis[:200]
                )
            console.print(w)

    if result.tags:
        tg = result.tags
        t = Table(title="Tagging", title_justify="left")
        t.caption = "acc: over 1-lab (single-label) rows; P/R/F1: micro; cls: classes"
        t.caption_justify = "left"
        for col in ("mAP", "acc", "P", "R", "F1", "rows", "cls", "1-lab", "∅ref", "∅hyp"):
            t.add_column(col, justify="right")
        t.add_row(
            _fmt(tg.map), _fmt(tg.accuracy), _fmt(tg.precision), _fmt(tg.recall), _fmt(tg.f1),
            str(tg.n_rows), str(tg.n_classes), str(tg.n_single), str(tg.n_empty_ref),
            str(tg.n_empty_hyp),
        )  # fmt: skip
        console.print(t)

    for name in ("caption", "answer"):
        sim = getattr(result, name)
        if not sim:
            continue
        t = Table(title=f"{name.capitalize()} similarity (lexical, offline)", title_justify="left")
        for col in ("token F1", "ROUGE-L", "BLEU-4", "rows", "scored", "∅ref", "∅hyp"):
            t.add_column(col, justify="right")
        t.add_row(
            _fmt(sim.token_f1), _fmt(sim.rouge_l), _fmt(sim.bleu), str(sim.n_rows),
            str(sim.n_scored), str(sim.n_empty_ref), str(sim.n_empty_hyp),
        )  # fmt: skip
        console.print(t)

    if result.choices:
        ch = result.choices
        t = Table(title="Multiple choice", title_justify="left")
        t.caption = "correct: names the right option (letter or text) and no other"
        t.caption_justify = "left"
        for col in ("accuracy", "correct", "scored", "rows", "∅ref", "∅hyp", "none", "several"):
            t.add_column(col, justify="right")
        t.add_row(
            _fmt(ch.accuracy), str(ch.n_correct), str(ch.n_scored), str(ch.n_rows),
            str(ch.n_empty_ref), str(ch.n_empty_hyp), str(ch.n_named_none),
            str(ch.n_named_several),
        )  # fmt: skip
        console.print(t)
