"""Multiple-choice accuracy: did the model name the right option, and only that one?

A reference row is a multiple-choice question when it has `choices` (a list of option texts, or a
string in any form `tagging.read_list` takes) and an `answer` (the correct option by letter, "B",
"(B)", "Answer: B", or by its text). Options are lettered A, B, C... in the order given; options
written with their own letters ("(A) dog", "B. cat", in order) have those letters dropped.

A model answer names an option:
- by letter, only in a marked form: the whole answer is the letter ("B", "(B)", "[B]", "B.",
  "B)", "B:") or starts with one followed by text ("B. a dog"); "(C)" anywhere names C too. A bare
  capital inside a sentence is not a letter ("A dog barks" names no option A);
- by text, when the answer (or the text after its letter) equals the option's text, ignoring case,
  spacing and outer punctuation.
A leading "Answer:", "The answer is" or "The correct answer is" is dropped first. The row is correct
when the named set is exactly the right option: "B. cat" where C is "cat" names two and is wrong,
as is an answer that names none.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from earmark.evaluation.tagging import read_list
from earmark.evaluation.wer import strip_special

LETTERS = string.ascii_uppercase
_PREFIX = re.compile(r"^(?:the\s+)?(?:correct\s+)?answer(?:\s+is)?\s*[:：]?\s*", re.IGNORECASE)
# a leading letter: "(B)", "[B]", or "B" followed by . ) : or the end, then the rest
_LEADING_LETTER = re.compile(
    r"^(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Za-z])(?:[.):：]|$))\s*(.*)$", re.DOTALL
)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_OWN_MARK = re.compile(r"^\s*(?:\(([A-Za-z])\)|([A-Za-z])[.)])\s+")
_SPACES = re.compile(r"\s+")


def option_text(text: str) -> str:
    """Comparable form of an option or answer text: case, spacing, outer punctuation ignored."""
    return _SPACES.sub(" ", text).strip().strip(".,;:!?\"'()[]").strip().casefold()


def read_choices(value: Any) -> list[str]:
    """Option texts of a `choices` cell; ValueError (from `read_list`) when unreadable."""
    items = read_list(value)
    marks = [_OWN_MARK.match(item) for item in items]
    # drop the options' own letters only when every option carries its letter, in order
    if items and all(
        m and (m.group(1) or m.group(2)).upper() == LETTERS[i] for i, m in enumerate(marks)
    ):
        items = [item[m.end() :] for item, m in zip(items, marks, strict=True) if m]
    return items


def named_options(answer: str | None, choices: list[str]) -> set[int]:
    """Indexes of the options `answer` names (module docstring gives the rules)."""
    text = _PREFIX.sub("", strip_special(answer)).strip()
    if not text:
        return set()
    named: set[int] = set()
    rest = text
    lead = _LEADING_LETTER.match(text)
    if lead:
        letter = (lead.group(1) or lead.group(2) or lead.group(3)).upper()
        if letter in LETTERS[: len(choices)]:
            named.add(LETTERS.index(letter))
            rest = lead.group(4)
    for letter in _PAREN_LETTER.findall(text):
        if letter in LETTERS[: len(choices)]:
            named.add(LETTERS.index(letter))
    wanted = option_text(rest)
    if wanted:
        named |= {i for i, c in enumerate(choices) if option_text(c) == wanted}
    return named


def answer_index(answer: Any, choices: list[str]) -> int:
    """The correct option of a reference row; ValueError with the fix when it names none or
    several."""
    named = named_options(str(answer), choices)
    if len(named) == 1:
        return named.pop()
    letters = ", ".join(f"{LETTERS[i]}={c!r}" for i, c in enumerate(choices))
    what = "none" if not named else "several"
    raise ValueError(
        f"answer {answer!r} names {what} of the choices ({letters}); write the right option's "
        "letter or its exact text"
    )


class ChoiceScore(BaseModel):
    """Multiple-choice result over rows whose reference has choices."""

    n_rows: int = Field(default=0, description="Rows with choices")
    n_empty_ref: int = Field(default=0, description="Rows with choices but no answer (not scored)")
    n_scored: int = Field(default=0, description="Rows with choices and an answer")
    n_correct: int = Field(default=0, description="Model named the right option and no other")
    n_empty_hyp: int = Field(default=0, description="Model gave no answer (wrong)")
    n_named_none: int = Field(default=0, description="Answer names no option (wrong)")
    n_named_several: int = Field(default=0, description="Answer names more than one option")
    accuracy: float | None = Field(default=None, description="n_correct / n_scored")


def score_choices(rows: Iterable[tuple[list[str], int | None, str | None]]) -> ChoiceScore:
    """Score (choices, index of the right option or None, model answer) triples."""
    result = ChoiceScore()
    for choices, right, answer in rows:
        result.n_rows += 1
        if right is None:
            result.n_empty_ref += 1
            continue
        result.n_scored += 1
        if not answer or not answer.strip():
            result.n_empty_hyp += 1
            continue
        named = named_options(answer, choices)
        if not named:
            result.n_named_none += 1
        elif len(named) > 1:
            result.n_named_several += 1
        elif right in named:
            result.n_correct += 1
    if result.n_scored:
        result.accuracy = result.n_correct / result.n_scored
    return result
