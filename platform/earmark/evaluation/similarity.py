"""Offline text similarity for captions and open answers: token F1, ROUGE-L and corpus BLEU-4.

Model-based scores (the FENSE/SBERT cosine of the MiDashengLM recipe) need weights from a hub, so
earmark reports three lexical scores that run anywhere, each in [0, 1]:

- token_f1: SQuAD-style F1 of the bag of tokens shared by hypothesis and reference, per row, mean
  over rows;
- rouge_l: ROUGE-L F1 (longest common subsequence; recall and precision over the two lengths,
  β = 1), per row, mean over rows; texts are cut to LCS_MAX_TOKENS tokens for the LCS;
- bleu: corpus BLEU-4 (clipped n-gram precisions summed over the corpus, geometric mean over
  n = 1..4, brevity penalty from total lengths; 0 when some order has no match).

Tokens: lowercase, punctuation and symbols removed, split on whitespace; languages written without
spaces (zh, ja, th...) use characters. Rows with an empty reference are counted and left out; rows
with an empty hypothesis score 0 and are counted.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, Field

from earmark.evaluation.wer import canonical_language, strip_special, uses_characters

BLEU_MAX_ORDER = 4
# ROUGE-L is quadratic in length: longer texts are cut to this many tokens (a 20k-token answer
# would otherwise take minutes in pure Python).
LCS_MAX_TOKENS = 2000


def text_tokens(text: str | None, lang: str = "en") -> list[str]:
    """Lowercased tokens without punctuation; characters for languages written without spaces."""
    text = strip_special(text).lower()
    # Unicode categories P* (punctuation) and S* (symbols) become spaces.
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    if uses_characters(canonical_language(lang)):
        return [c for c in text if not c.isspace()]
    return text.split()


def token_f1(ref: list[str], hyp: list[str]) -> float:
    """F1 of the multiset overlap of tokens."""
    common = sum((Counter(ref) & Counter(hyp)).values())
    if not common:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (O(len(a)·len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    a, b = a[:LCS_MAX_TOKENS], b[:LCS_MAX_TOKENS]
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(ref: list[str], hyp: list[str]) -> float:
    """ROUGE-L F1 (β = 1)."""
    lcs = lcs_length(ref, hyp)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class _BleuAccumulator:
    """Corpus BLEU: clipped n-gram matches and totals summed over all rows."""

    def __init__(self, max_order: int = BLEU_MAX_ORDER):
        self.max_order = max_order
        self.matches = [0] * max_order
        self.totals = [0] * max_order
        self.ref_len = 0
        self.hyp_len = 0

    def add(self, ref: list[str], hyp: list[str]) -> None:
        self.ref_len += len(ref)
        self.hyp_len += len(hyp)
        for n in range(1, self.max_order + 1):
            h, r = _ngrams(hyp, n), _ngrams(ref, n)
            self.matches[n - 1] += sum((h & r).values())
            self.totals[n - 1] += sum(h.values())

    def score(self) -> float | None:
        if not self.ref_len:
            return None
        if not self.hyp_len or min(self.matches) == 0:
            return 0.0
        log_p = sum(math.log(m / t) for m, t in zip(self.matches, self.totals, strict=True))
        bp = 1.0 if self.hyp_len > self.ref_len else math.exp(1 - self.ref_len / self.hyp_len)
        return bp * math.exp(log_p / self.max_order)


class SimilarityScore(BaseModel):
    """Lexical similarity of model text against references (captions or open answers)."""

    n_rows: int = Field(default=0, description="Rows with this reference column")
    n_scored: int = Field(default=0, description="Rows with a non-empty reference")
    n_empty_ref: int = Field(default=0, description="Rows whose reference is empty")
    n_empty_hyp: int = Field(default=0, description="Scored rows with empty model text (score 0)")
    token_f1: float | None = Field(default=None, description="Mean token F1")
    rouge_l: float | None = Field(default=None, description="Mean ROUGE-L F1")
    bleu: float | None = Field(default=None, description="Corpus BLEU-4")


def score_similarity(rows: Iterable[tuple[str | None, str | None, str]]) -> SimilarityScore:
    """Score (reference, hypothesis, language) triples."""
    result = SimilarityScore()
    f1_sum = rouge_sum = 0.0
    bleu = _BleuAccumulator()
    for ref_text, hyp_text, lang in rows:
        result.n_rows += 1
        ref, hyp = text_tokens(ref_text, lang), text_tokens(hyp_text, lang)
        if not ref:
            result.n_empty_ref += 1
            continue
        result.n_scored += 1
        if not hyp:
            result.n_empty_hyp += 1
        f1_sum += token_f1(ref, hyp)
        rouge_sum += rouge_l(ref, hyp)
        bleu.add(ref, hyp)
    if result.n_scored:
        result.token_f1 = f1_sum / result.n_scored
        result.rouge_l = rouge_sum / result.n_scored
        result.bleu = bleu.score()
    return result
