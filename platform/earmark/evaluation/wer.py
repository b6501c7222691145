"""ASR scoring: Whisper text normalisation, then corpus WER (or CER) with jiwer.

The recipe follows the MiDashengLM evaluation scripts (`xiaomi-research/dasheng-lm`, `evaluate/`):

1. strip special tags such as `<|en|>` and collapse spaces;
2. English: Whisper's `EnglishTextNormalizer` and then `BasicTextNormalizer` (the second runs on the
   output of the first, as in the reference script); every other language: `BasicTextNormalizer`;
3. Chinese-like languages (written without spaces) are scored on characters (CER), all others on
   whitespace-separated words (WER);
4. corpus rate = Σ edit distance / Σ reference tokens, edit distance from jiwer.

One deliberate difference: the reference script silently skips pairs whose reference or hypothesis
is empty. Here a pair with an empty hypothesis counts as all deletions in `rate` (a model that says
nothing must not look good), pairs with an empty reference are left out of every rate (no reference
token to divide by) but counted, and `rate_both_nonempty` reproduces the reference script's number.
Chinese and Cantonese (`zh`, `yue`) get a Chinese step before the basic normaliser, as the
reference scripts run a Chinese text normaliser first: Traditional characters become Simplified
(`zhconv`, MediaWiki tables, "zh-hans": characters only, no regional vocabulary), then Chinese
numerals become Arabic digits (`cn2an.transform(..., "cn2an")`: "二零二四年" and "两千零二十四年"
→ "2024年", "百分之五十" → "50%"). The reference's speechio `cn_tn` goes the other way (digits to
spoken characters). Towards characters a number has one written form but several spoken ones
(cn2an writes "2024年" as "二零二四年", and a speaker may say "两千零二十四年"); towards digits
every spoken form meets the same digits, so that direction is used. cn2an also rewrites a numeral
inside a word ("一起" → "1起"); it does so on both sides, so the counts still agree.

The Whisper normalisers are transformers' `english_normalizer.py` loaded by file path: importing
it as `transformers.models.whisper...` would run transformers' package `__init__`, which imports
torch (seconds and a gigabyte for a text function).
"""

from __future__ import annotations

import heapq
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable
from functools import lru_cache
from importlib import resources
from types import ModuleType

import jiwer
from pydantic import BaseModel, Field

# Languages scored on characters: written without spaces between words.
CHAR_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "my"})
# Aliases seen in manifests, mapped to the ISO 639-1 code used for grouping.
LANGUAGE_ALIASES = {
    "english": "en",
    "chinese": "zh",
    "mandarin": "zh",
    "cmn": "zh",
    "cantonese": "yue",
    "japanese": "ja",
    "thai": "th",
}
# Environment variable naming a Whisper `normalizer.json` (British→American spelling map).
SPELLING_ENV = "EARMARK_WHISPER_NORMALIZER_JSON"
# Examples kept for the "worst rows" part of the report.
WORST_KEPT = 10

_SPECIAL = re.compile(r"<\|[^|>]*\|>")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([!,.?;:])")


def canonical_language(lang: str | None, default: str = "en") -> str:
    """`en-US`, `English`, `EN` → `en`; empty → `default`."""
    if not lang or not str(lang).strip():
        return default
    low = str(lang).strip().lower().replace("_", "-")
    low = LANGUAGE_ALIASES.get(low, low)
    return LANGUAGE_ALIASES.get(low.split("-")[0], low.split("-")[0])


def uses_characters(lang: str) -> bool:
    """True when the language is scored as CER (character tokens)."""
    return canonical_language(lang) in CHAR_LANGUAGES


@lru_cache(maxsize=1)
def english_spelling_mapping() -> tuple[dict[str, str], str]:
    """The British→American spelling map Whisper's English normaliser needs, and where it came from.

    transformers' `EnglishTextNormalizer` takes this map as an argument (a WhisperTokenizer reads it
    from a checkpoint's `normalizer.json`). Offline sources, in order: the file named by
    $EARMARK_WHISPER_NORMALIZER_JSON, the `english.json` shipped in the `whisper-normalizer`
    package. Without either the map is empty: only the spelling step is lost.
    """
    path = os.environ.get(SPELLING_ENV)
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f), path
    try:
        ref = resources.files("whisper_normalizer") / "normalizers" / "english.json"
        return json.loads(ref.read_text(encoding="utf-8")), "whisper_normalizer/english.json"
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return {}, "none (British spellings are not mapped)"


# Languages whose text goes through the Chinese step (Traditional→Simplified, numerals→digits).
CHINESE_LANGUAGES = frozenset({"zh", "yue"})
# transformers' Whisper normaliser module, relative to the transformers package folder.
_WHISPER_NORMALIZER_FILE = os.path.join("models", "whisper", "english_normalizer.py")


def _load_whisper_normalizer_module() -> ModuleType:
    """transformers' `english_normalizer.py` (stdlib + `regex` only) without transformers'
    package `__init__`, which imports torch. `find_spec` of a top-level name imports nothing."""
    spec = importlib.util.find_spec("transformers")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = os.path.join(folder, _WHISPER_NORMALIZER_FILE)
        if os.path.isfile(path):
            file_spec = importlib.util.spec_from_file_location("_earmark_whisper_normalizer", path)
            if file_spec is None or file_spec.loader is None:
                break
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
            return module
    # a transformers layout without the file: the ordinary import (slow, same code)
    from transformers.models.whisper import english_normalizer

    return english_normalizer


@lru_cache(maxsize=1)
def _normalizers() -> tuple[Callable[[str], str], Callable[[str], str]]:
    module = _load_whisper_normalizer_module()
    mapping, _ = english_spelling_mapping()
    return module.EnglishTextNormalizer(mapping), module.BasicTextNormalizer()


@lru_cache(maxsize=1)
def _chinese_converters() -> tuple[Callable[[str], str], Callable[[str], str]]:
    # imported on first Chinese text: cn2an takes ~0.1 s to import
    import cn2an
    import zhconv

    def simplified(text: str) -> str:
        return zhconv.convert(text, "zh-hans")

    def digits(text: str) -> str:
        # cn2an warns and leaves the text as it is when a numeral does not parse ("十十"):
        # that is the wanted outcome, so the warning is noise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cn2an.transform(text, "cn2an")

    return simplified, digits


def normalize_chinese(text: str) -> str:
    """Traditional → Simplified characters, then Chinese numerals → Arabic digits."""
    simplified, digits = _chinese_converters()
    return digits(simplified(text))


def strip_special(text: str | None) -> str:
    """Remove `<|...|>` tags, collapse whitespace and the space before punctuation."""
    text = _SPECIAL.sub(" ", text or "")
    text = re.sub(r"\s+", " ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def normalize(text: str | None, lang: str) -> str:
    """Text as scored: Whisper English (en) or the Chinese step (zh, yue), then the basic
    normaliser; lowercase, no marks."""
    english, basic = _normalizers()
    text = strip_special(text)
    code = canonical_language(lang)
    if code == "en":
        text = english(text)
    elif code in CHINESE_LANGUAGES and text:
        # before the basic normaliser, which drops the "%" that "百分之五十" becomes
        text = normalize_chinese(text)
    return re.sub(r"\s+", " ", basic(text)).strip()


def tokens(text: str | None, lang: str) -> list[str]:
    """Scoring tokens: characters (spaces dropped) for CJK/Thai-like languages, else words."""
    norm = normalize(text, lang)
    if uses_characters(lang):
        return [c for c in norm if not c.isspace()]
    return norm.split()


class LanguageScore(BaseModel):
    """Corpus error counts of one language (or of all word- or character-scored languages)."""

    language: str = Field(description="Language code, or 'all'")
    metric: str = Field(description="'wer' (word tokens) or 'cer' (character tokens)")
    n_pairs: int = Field(default=0, description="Reference/hypothesis pairs seen")
    n_scored: int = Field(default=0, description="Pairs in `rate` (reference not empty)")
    n_empty_ref: int = Field(default=0, description="Pairs whose normalised reference is empty")
    n_empty_hyp: int = Field(default=0, description="Pairs whose normalised hypothesis is empty")
    ref_tokens: int = Field(default=0, description="Reference tokens in `rate`")
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    rate: float | None = Field(default=None, description="(S+D+I)/N over scored pairs")
    rate_both_nonempty: float | None = Field(
        default=None, description="Rate over pairs where neither side is empty (reference recipe)"
    )
    errors_both_nonempty: int = 0
    ref_tokens_both_nonempty: int = 0
    empty_ref_insertions: int = Field(
        default=0, description="Hypothesis tokens of pairs with an empty reference (not in rate)"
    )

    def add(self, ref: list[str], hyp: list[str]) -> tuple[int, int]:
        """Count one pair; return its (errors, reference tokens)."""
        self.n_pairs += 1
        if not hyp:
            self.n_empty_hyp += 1
        if not ref:
            self.n_empty_ref += 1
            self.empty_ref_insertions += len(hyp)
            return len(hyp), 0
        self.n_scored += 1
        s, d, i = edit_counts(ref, hyp)
        self.substitutions += s
        self.deletions += d
        self.insertions += i
        self.ref_tokens += len(ref)
        if hyp:
            self.errors_both_nonempty += s + d + i
            self.ref_tokens_both_nonempty += len(ref)
        self._update()
        return s + d + i, len(ref)

    def _update(self) -> None:
        errors = self.substitutions + self.deletions + self.insertions
        self.rate = errors / self.ref_tokens if self.ref_tokens else None
        n = self.ref_tokens_both_nonempty
        self.rate_both_nonempty = self.errors_both_nonempty / n if n else None


def edit_counts(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) between two token lists, via jiwer."""
    if not hyp:
        return 0, len(ref), 0
    # Tokens are joined with spaces and split again by jiwer's default transform; tokens never
    # contain whitespace (normalised words, or single non-space characters).
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return out.substitutions, out.deletions, out.insertions


class AsrExample(BaseModel):
    """One scored row, kept for the worst-rows listing."""

    key: str
    language: str
    errors: int
    ref_tokens: int
    reference: str
    hypothesis: str


def _all_score(metric: str) -> LanguageScore:
    return LanguageScore(language="all", metric=metric)


class AsrScore(BaseModel):
    """ASR result: corpus WER over word-scored languages, CER over character-scored ones."""

    wer: float | None = Field(default=None, description="Corpus WER of word-scored languages")
    cer: float | None = Field(default=None, description="Corpus CER of character-scored languages")
    words: LanguageScore = Field(
        default_factory=lambda: LanguageScore(language="all", metric="wer")
    )
    chars: LanguageScore = Field(
        default_factory=lambda: LanguageScore(language="all", metric="cer")
    )
    per_language: dict[str, LanguageScore] = Field(default_factory=dict)
    spelling_map: str = Field(default="", description="Source of the English spelling map")
    worst: list[AsrExample] = Field(default_factory=list, description="Highest-error rows")


def score_asr(pairs: Iterable[tuple[str, str | None, str | None, str]]) -> AsrScore:
    """Score (key, reference, hypothesis, language) tuples into corpus WER/CER per language."""
    result = AsrScore(spelling_map=english_spelling_mapping()[1])
    # Bounded min-heap of the worst rows so far: memory stays flat on large archives.
    heap: list[tuple[float, int, str, str, list[str], list[str]]] = []
    for key, ref_text, hyp_text, lang in pairs:
        lang = canonical_language(lang)
        metric = "cer" if uses_characters(lang) else "wer"
        ref, hyp = tokens(ref_text, lang), tokens(hyp_text, lang)
        per = result.per_language.setdefault(lang, LanguageScore(language=lang, metric=metric))
        per.add(ref, hyp)
        errors, n_ref = (result.chars if metric == "cer" else result.words).add(ref, hyp)
        if ref and errors:
            item = (errors / n_ref, errors, key, lang, ref, hyp)
            if len(heap) < WORST_KEPT:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
    result.wer, result.cer = result.words.rate, result.chars.rate
    for _, errors, key, lang, ref, hyp in sorted(heap, reverse=True):
        joiner = "" if uses_characters(lang) else " "
        result.worst.append(
            AsrExample(
                key=key,
                language=lang,
                errors=errors,
                ref_tokens=len(ref),
                reference=joiner.join(ref),
                hypothesis=joiner.join(hyp),
            )
        )
    return result
