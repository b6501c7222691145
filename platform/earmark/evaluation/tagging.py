"""Tagging scores: macro mAP over multi-hot labels, micro P/R/F1, and single-label accuracy.

Label matching rules (both sides go through `normalize_label`):
- lowercase, `_` → space, `", and "` and `", "` inside a label → `" and "` (FSD50K style names
  such as "Bicycle_bell" or "Crowd, and chatter"), whitespace collapsed, outer punctuation stripped;
- reference labels come from a list column, a JSON or Python list in a string, a `;`- or
  newline-separated string, or a comma-separated string (`read_list` gives the comma rule: AudioSet
  names such as "Child speech, kid speaking" keep their commas);
- predictions are the row's `tags_raw` split again against the reference vocabulary
  (`split_tags`: on `;`, newlines, commas and " and ", never inside a reference label such as
  "Speech and singing", which the models' splitters break), or its `tags` when there is no raw
  text; only predicted labels that occur in some reference count (the class set is the reference
  vocabulary), as in the MiDashengLM `compute_map.py` recipe.

mAP: the model emits label sets without scores, so each class has binary predictions. Its average
precision is the step-wise area used by scikit-learn's `average_precision_score` for such input:
with `TP`, `FP` at the "predicted" threshold, `P = TP/(TP+FP)`, `R = TP/npos`, and the "everything"
threshold giving precision `npos/n` at recall 1: `AP = R·P + (1 − R)·npos/n` (`R·P` is 0 when the
class is never predicted). mAP is the unweighted mean over classes that have ≥1 positive reference.

Single-label accuracy: over rows whose reference has exactly one label, a row is correct when that
label occurs in the model's raw tag text and no other class of the single-label rows does.
Occurrences are bounded by non-word characters, so "male" does not match inside "female"; text
matched by the reference label is not searched again, so "male speech" does not also name
"speech". The `compute_at_acc.py` rule (the label occurs, whatever else is named) scored an answer
naming every class ("male or female") as correct.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

_SPACES = re.compile(r"\s+")


def normalize_label(label: str) -> str:
    """Canonical label text used on both sides of every comparison."""
    text = str(label).lower().replace("_", " ")
    text = text.replace(", and ", " and ").replace(", ", " and ")
    text = _SPACES.sub(" ", text)
    return text.strip().strip(".:;\"'").strip()


# A comma followed by a space and a lower-case word, or an all-capitals word, continues a label.
# Why: in the AudioSet ontology (ontology.json, class_labels_indices.csv) a display name starts
# with a capital and lists its synonyms after ", " in lower case ("Child speech, kid speaking",
# "Dishes, pots, and pans", "Telephone dialing, DTMF"), while a list of names puts a capital after
# each comma ("Speech, Music"). FSD50K's ground-truth CSVs join labels with "," and no space
# ("Bark,Dog,Domestic_animals_and_pets"). Known miss: "Boat, Water vehicle" reads as two labels.
_CONTINUES = re.compile(r"^\s+(?:[a-z]|[A-Z]{2,}\b)")
_LIST_SEPARATORS = re.compile(r"[;\n]")
LIST_FIX = 'write it as a JSON list (["Speech", "Music"]) or separate the items with ";"'


def _split_commas(text: str) -> list[str]:
    """Items of a comma-separated string (see `_CONTINUES`). The continuation rule applies only
    when the text starts with a capital (AudioSet style); a lower-case or caseless text
    ("speech, music", "狗, 猫") is split at every comma."""
    parts = text.split(",")
    first = next((c for c in text if c.isalpha()), "")
    if not first.isupper():
        return parts
    items = [parts[0]]
    for part in parts[1:]:
        if _CONTINUES.match(part):
            items[-1] += "," + part
        else:
            items.append(part)
    return items


def _list_literal(text: str) -> list[Any]:
    """A list written as JSON or as a Python literal (pandas writes "['Speech', 'Music']")."""
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"{text[:80]!r} starts with '[' but is not a JSON list") from None
    if not isinstance(value, list | tuple):
        raise ValueError(f"{text[:80]!r} is not a list")
    return list(value)


def read_list(value: Any) -> list[str]:
    """Items of a list-valued reference cell (labels, choices), stripped, blanks dropped.

    Accepted: a list; a string holding a JSON or Python list; a string separated by `;` or
    newlines (commas then stay inside items); else a comma-separated string (`_split_commas`);
    a number (a class index) is one item. Raises ValueError, ending with the fix, for anything
    else (an object, a nested list, a broken JSON list).
    """
    if value is None:
        return []
    if isinstance(value, bool) or isinstance(value, dict):
        raise ValueError(f"a {type(value).__name__} is not a list; {LIST_FIX}")
    if isinstance(value, int | float):
        items: list[Any] = [] if value != value else [value]  # NaN (an empty pandas cell)
    elif isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            raise ValueError(f"{text[:80]!r} is an object, not a list; {LIST_FIX}")
        if text.startswith("["):
            try:
                items = _list_literal(text)
            except ValueError as exc:
                raise ValueError(f"{exc}; {LIST_FIX}") from None
        elif _LIST_SEPARATORS.search(text):
            items = _LIST_SEPARATORS.split(text)
        else:
            items = _split_commas(text) if text else []
    else:
        raise ValueError(f"a {type(value).__name__} is not a list; {LIST_FIX}")
    out: list[str] = []
    for item in items:
        if item is None:
            continue
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise ValueError(f"item {item!r} is not a text; {LIST_FIX}")
        text = str(item).strip()
        if text:
            out.append(text)
    return out


def parse_labels(value: Any) -> list[str]:
    """Reference labels (any form `read_list` takes), normalised and without repeats."""
    out: list[str] = []
    for item in read_list(value):
        label = normalize_label(item)
        if label and label not in out:
            out.append(label)
    return out


def binary_average_precision(y_true: list[bool], y_pred: list[bool]) -> float:
    """AP of one class from binary predictions (step-wise PR area, scikit-learn's definition)."""
    n = len(y_true)
    npos = sum(1 for t in y_true if t)
    if n == 0 or npos == 0:
        raise ValueError("average precision needs at least one positive reference")
    tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t and p)
    fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if p and not t)
    recall = tp / npos
    precision = tp / (tp + fp) if tp + fp else 0.0
    return recall * precision + (1.0 - recall) * (npos / n)


def _label_pattern(label: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + re.escape(normalize_label(label)) + r"(?!\w)")


def label_in_text(label: str, text: str) -> bool:
    """True when `label` occurs in `text` as whole words (case-insensitive, normalised)."""
    return _label_pattern(label).search(normalize_label(text)) is not None


def names_only(label: str, text: str, classes: Iterable[str]) -> bool:
    """True when `text` names `label` and none of the other `classes` (whole words; the text
    the label matched is not searched for the others)."""
    norm = normalize_label(text)
    own = _label_pattern(label)
    if not own.search(norm):
        return False
    rest = own.sub(" | ", norm)
    return not any(_label_pattern(c).search(rest) for c in classes if c != normalize_label(label))


_LINES = re.compile(r"[;\n]")
_AND = re.compile(r"\s+and\s+")
_BULLET = re.compile(r"^[\s\-*•\d.)]+")


def split_tags(raw: str, vocabulary: Iterable[str]) -> list[str]:
    """A model's raw tag text as labels, split on `;`, newlines, commas and " and " but never
    inside a label of `vocabulary` (the reference labels): the models' own splitters break
    labels such as "Speech and singing" into two that can never match."""
    joined = sorted((v for v in vocabulary if " and " in v), key=len, reverse=True)
    out: list[str] = []
    for line in _LINES.split(raw):
        text = normalize_label(_BULLET.sub("", line))  # commas become " and ", as in labels
        kept: dict[str, str] = {}
        for label in joined:
            mark = f"\x00{len(kept)}\x00"
            text, n = _label_pattern(label).subn(mark, text)
            if n:
                kept[mark] = label
        for part in _AND.split(text):
            label = kept.get(part.strip()) or normalize_label(part)
            if label and label not in out:
                out.append(label)
    return out


class TagScore(BaseModel):
    """Tagging result over rows that have reference labels."""

    n_rows: int = Field(default=0, description="Rows with a labels reference (empty included)")
    n_empty_ref: int = Field(default=0, description="Rows whose reference label list is empty")
    n_empty_hyp: int = Field(default=0, description="Scored rows where the model gave no label")
    n_classes: int = Field(default=0, description="Distinct reference labels (mAP classes)")
    map: float | None = Field(default=None, description="Macro mean average precision")
    precision: float | None = Field(default=None, description="Micro precision of label sets")
    recall: float | None = Field(default=None, description="Micro recall of label sets")
    f1: float | None = Field(default=None, description="Micro F1 of label sets")
    n_single: int = Field(default=0, description="Rows with exactly one reference label")
    accuracy: float | None = Field(default=None, description="Single-label accuracy")
    per_class_ap: dict[str, float] = Field(default_factory=dict, description="AP per class")


def score_tags(rows: Iterable[tuple[Any, list[str] | None, str | None]]) -> TagScore:
    """Score (reference labels, predicted tags, raw tag text) triples."""
    result = TagScore()
    scored: list[tuple[list[str], Any, str | None]] = []
    for ref_value, tags, raw in rows:
        result.n_rows += 1
        ref = parse_labels(ref_value)
        if not ref:
            result.n_empty_ref += 1
            continue
        scored.append((ref, tags, raw))
    if not scored:
        return result
    refs = [ref for ref, _, _ in scored]
    classes = sorted({label for ref in refs for label in ref})
    preds: list[set[str]] = []
    single: list[tuple[str, str]] = []  # (reference label, text) of single-label rows
    for ref, tags, raw in scored:
        # the raw text split again, never inside a reference label ("speech and singing")
        pred = split_tags(raw, classes) if raw and raw.strip() else parse_labels(tags)
        text = raw if raw and raw.strip() else "; ".join(pred)
        if not pred:
            result.n_empty_hyp += 1
        preds.append(set(pred))
        if len(ref) == 1:
            single.append((ref[0], text))
    result.n_classes = len(classes)
    ref_sets = [set(r) for r in refs]
    for label in classes:
        y_true = [label in r for r in ref_sets]
        y_pred = [label in p for p in preds]
        result.per_class_ap[label] = binary_average_precision(y_true, y_pred)
    result.map = sum(result.per_class_ap.values()) / len(classes)
    vocab = set(classes)
    tp = sum(len(r & p) for r, p in zip(ref_sets, preds, strict=True))
    n_pred = sum(len(p & vocab) for p in preds)
    n_ref = sum(len(r) for r in ref_sets)
    result.precision = tp / n_pred if n_pred else 0.0
    result.recall = tp / n_ref
    pr = result.precision + result.recall
    result.f1 = 2 * result.precision * result.recall / pr if pr else 0.0
    result.n_single = len(single)
    if single:
        single_classes = {label for label, _ in single}
        correct = sum(bool(t) and names_only(lab, t, single_classes) for lab, t in single)
        result.accuracy = correct / len(single)
    return result
