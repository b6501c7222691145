"""ASR scoring: Whisper normalisers, corpus WER/CER, empty-side accounting (known answers)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from earmark.evaluation.wer import (
    canonical_language,
    english_spelling_mapping,
    normalize,
    score_asr,
    tokens,
)


def wer_of(pairs: list[tuple[str, str]], lang: str = "en") -> float | None:
    score = score_asr((f"k{i}", r, h, lang) for i, (r, h) in enumerate(pairs))
    per = score.per_language[canonical_language(lang)]
    return per.rate


@pytest.mark.parametrize(
    ("ref", "hyp"),
    [
        ("Hello, World!", "hello world"),  # punctuation and casing
        ("I'm twenty-five years old.", "I am 25 years old"),  # contraction and spoken numbers
        ("It won't rain on the first of May.", "it will not rain on the 1st of may"),
        ("He has one hundred and two dollars", "he has 102 dollars"),
        ("Mr. Smith's colour is grey", "mister smith's color is gray"),  # titles, US spelling
        ("<|en|>Uh, the cat sat.", "the cat sat"),  # special tags and fillers dropped
    ],
)
def test_english_normaliser_makes_equivalent_texts_match(ref: str, hyp: str) -> None:
    assert normalize(ref, "en") == normalize(hyp, "en")
    assert wer_of([(ref, hyp)]) == 0.0


def test_spelling_mapping_is_available_offline() -> None:
    mapping, source = english_spelling_mapping()
    assert mapping.get("colour") == "color"
    assert "none" not in source


def test_known_word_errors() -> None:
    # 1 substitution (sat→sit) + 1 deletion (the) over 6 reference words.
    assert wer_of([("the cat sat on the mat", "the cat sit on mat")]) == pytest.approx(2 / 6)
    # 1 insertion over 3 reference words.
    assert wer_of([("a b c", "a b c d")]) == pytest.approx(1 / 3)


def test_corpus_rate_sums_errors_not_rates() -> None:
    pairs = [("red green blue cyan", "red green blue pink"), ("a b c d e f", "a x c y e z")]
    # (1 + 3) / (4 + 6) = 0.4, while the mean of per-row rates would be 0.375.
    assert wer_of(pairs) == pytest.approx(0.4)
    score = score_asr((f"k{i}", r, h, "en") for i, (r, h) in enumerate(pairs))
    assert score.wer == pytest.approx(0.4)
    assert (score.words.substitutions, score.words.deletions, score.words.insertions) == (4, 0, 0)
    assert score.worst[0].key == "k1"  # highest error rate first


def test_chinese_is_scored_on_characters() -> None:
    assert tokens("你好，世界！", "zh") == ["你", "好", "世", "界"]
    assert wer_of([("你好世界", "你好时节")], "zh") == pytest.approx(0.5)
    assert wer_of([("你好，世界！", "你好 世界")], "zh-CN") == 0.0
    score = score_asr([("k", "你好世界", "你好", "zh"), ("e", "hello there", "hello", "en")])
    assert score.cer == pytest.approx(0.5) and score.wer == pytest.approx(0.5)
    assert score.per_language["zh"].metric == "cer"
    assert score.per_language["en"].metric == "wer"


def test_other_languages_use_only_the_basic_normaliser() -> None:
    assert wer_of([("Bonjour, le Monde!", "bonjour le monde")], "fr") == 0.0
    # The English number rewrite must not apply to French.
    assert normalize("twenty", "fr") == "twenty"
    assert wer_of([("deux", "2")], "fr") == 1.0


def test_empty_sides_are_counted_not_dropped() -> None:
    score = score_asr(
        [
            ("ok", "a b c d", "a b c d", "en"),
            ("nohyp", "e f", "", "en"),  # all deletions in rate
            ("nullhyp", "g h", None, "en"),
            ("noref", "", "x y z", "en"),  # no reference tokens: outside rate
            ("punct", "...", "hello", "en"),  # empty after normalisation
        ]
    )
    words = score.words
    assert words.n_pairs == 5
    assert words.n_empty_hyp == 2
    assert words.n_empty_ref == 2
    assert words.empty_ref_insertions == 4
    assert words.n_scored == 3
    assert words.deletions == 4 and words.ref_tokens == 8
    assert score.wer == pytest.approx(4 / 8)
    # The reference recipe's number: only pairs where both sides are non-empty.
    assert words.rate_both_nonempty == 0.0


def test_language_aliases() -> None:
    assert canonical_language("en-US") == "en"
    assert canonical_language("English") == "en"
    assert canonical_language("cmn") == "zh"
    assert canonical_language(None) == "en"
    assert canonical_language("", default="de") == "de"


def test_traditional_reference_matches_simplified_hypothesis() -> None:
    ref, hyp = "我們今天說話，聽見了嗎？", "我们今天说话 听见了吗"
    assert normalize(ref, "zh") == normalize(hyp, "zh")
    assert wer_of([(ref, hyp)], "zh") == 0.0
    assert wer_of([("廣東話好難學", "广东话好难学")], "yue") == 0.0  # Cantonese too
    # Japanese keeps its characters: 5 of 6 differ
    assert wer_of([("廣東話好難學", "广东话好难学")], "ja") == pytest.approx(5 / 6)


@pytest.mark.parametrize(
    ("ref", "hyp"),
    [
        ("二零二四年", "2024年"),  # a year read digit by digit
        ("二〇二四年三月", "2024年3月"),
        ("两千零二十四年", "2024年"),
        ("一百二十三个人", "123个人"),
        ("百分之五十", "50%"),
    ],
)
def test_chinese_numerals_and_digits_agree(ref: str, hyp: str) -> None:
    # numerals become digits (cn2an's direction); both sides then agree character by character
    assert normalize(ref, "zh") == normalize(hyp, "zh")
    assert wer_of([(ref, hyp)], "zh") == 0.0


def test_scoring_never_imports_torch(tmp_path) -> None:
    """The English normaliser is loaded from its file: transformers' package (torch) stays out."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        from earmark.evaluation.wer import normalize, score_asr
        s = score_asr([("k", "Mr. Smith's colour is grey", "mister smith's color is gray", "en"),
                       ("z", "二零二四年", "2024年", "zh")])
        assert s.wer == 0.0 and s.cer == 0.0, s
        assert normalize("I'm twenty-five", "en") == "i am 25", normalize("I'm twenty-five", "en")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        print("HEAVY", heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout, done.stdout
