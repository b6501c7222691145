"""Tagging (mAP, accuracy, micro P/R/F1) and caption/answer similarity on known cases."""

from __future__ import annotations

import random

import pytest

from earmark.evaluation.similarity import lcs_length, rouge_l, score_similarity, token_f1
from earmark.evaluation.tagging import (
    binary_average_precision,
    label_in_text,
    names_only,
    normalize_label,
    parse_labels,
    score_tags,
    split_tags,
)


def stepwise_ap(y_true: list[bool], scores: list[float]) -> float:
    """Independent AP: Σ (R_k − R_{k−1}) · P_k over distinct score thresholds, high to low."""
    npos = sum(y_true)
    ap, last_recall = 0.0, 0.0
    for thr in sorted(set(scores), reverse=True):
        chosen = [t for t, s in zip(y_true, scores, strict=True) if s >= thr]
        tp = sum(chosen)
        recall, precision = tp / npos, tp / len(chosen)
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def test_binary_ap_hand_case() -> None:
    # TP=1, FP=1 → P=0.5, R=0.5; all-positive threshold: precision npos/n = 0.5 at recall 1.
    assert binary_average_precision([1, 0, 1, 0], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert binary_average_precision([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    # Never predicted: only the "everything" threshold, precision = prevalence.
    assert binary_average_precision([0, 0, 0, 1], [0, 0, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        binary_average_precision([0, 0], [1, 0])


def test_binary_ap_matches_stepwise_definition() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 12)
        y = [rng.random() < 0.4 for _ in range(n)]
        if not any(y):
            y[0] = True
        p = [rng.random() < 0.5 for _ in range(n)]
        expected = stepwise_ap(y, [float(v) for v in p])
        assert binary_average_precision(y, p) == pytest.approx(expected)


def test_score_tags_known_case() -> None:
    rows = [
        (["Dog"], ["dog"], "Dog"),
        ("dog;cat", ["cat"], "cat"),
        (["cat"], ["dog", "cat", "unseen label"], "dog; cat; unseen label"),
        ('["bird"]', [], ""),
        ([], ["dog"], "dog"),  # empty reference: counted, not scored
    ]
    score = score_tags(rows)
    assert score.n_rows == 5 and score.n_empty_ref == 1 and score.n_empty_hyp == 1
    assert score.n_classes == 3
    assert score.per_class_ap == pytest.approx({"dog": 0.5, "cat": 1.0, "bird": 0.25})
    assert score.map == pytest.approx((0.5 + 1.0 + 0.25) / 3)
    # Micro, predictions outside the reference vocabulary ignored: tp 3, predicted 4, refs 5.
    assert score.precision == pytest.approx(0.75)
    assert score.recall == pytest.approx(0.6)
    assert score.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    # Single-label rows: dog ✓, cat ✗ ("dog; cat" names another class too), bird ✗.
    assert score.n_single == 3
    assert score.accuracy == pytest.approx(1 / 3)


def test_label_matching_rules() -> None:
    assert normalize_label("Bicycle_bell") == "bicycle bell"
    assert normalize_label("Crowd, and chatter") == normalize_label("crowd and chatter")
    assert parse_labels("Speech; Music ;speech") == ["speech", "music"]
    assert parse_labels('["A", "b"]') == ["a", "b"]
    assert parse_labels("['Speech', 'Music']") == ["speech", "music"]  # a Python list as text
    assert label_in_text("male", "A male speaker")
    assert not label_in_text("male", "female voice")  # whole words only
    assert label_in_text("Acoustic guitar", "I hear an ACOUSTIC GUITAR.")
    assert score_tags([(["male"], ["female"], "female")]).accuracy == 0.0


def test_an_answer_naming_every_class_is_not_correct() -> None:
    rows = [
        (["male"], None, "male or female"),  # names both classes: wrong
        (["female"], None, "A female speaker."),  # names its class only: right
        (["male speech"], None, "male speech"),  # "speech" inside its own label is not named
        (["speech"], None, "speech"),
        (["speech"], None, "male speech"),  # names another class: wrong
    ]
    score = score_tags(rows)
    assert score.n_single == 5 and score.accuracy == pytest.approx(3 / 5)
    assert names_only("male", "male", ["male", "female"])
    assert not names_only("male", "female", ["male", "female"])


def test_tags_are_never_split_inside_a_reference_label() -> None:
    vocab = ["speech and singing", "music", "speech", "crowd and chatter"]
    assert split_tags("Speech and singing, Music", vocab) == ["speech and singing", "music"]
    assert split_tags("1. Crowd, and chatter\n2. no music", vocab) == [
        "crowd and chatter", "no music"
    ]  # fmt: skip
    assert split_tags("speech and music", vocab) == ["speech", "music"]
    # the models' splitter gave ["speech", "singing"]: the raw text is split again
    rows = [(["Speech and singing"], ["speech", "singing"], "Speech and singing")]
    score = score_tags(rows)
    assert score.map == 1.0 and score.recall == 1.0 and score.accuracy == 1.0


def test_similarity_known_values() -> None:
    assert token_f1(["a", "cat", "sits"], ["the", "cat", "sits"]) == pytest.approx(2 / 3)
    assert lcs_length(list("abcd"), list("acbd")) == 3
    assert rouge_l(list("abcd"), list("acbd")) == pytest.approx(0.75)
    same = score_similarity([("A dog barks loudly at night.", "a dog barks loudly at night", "en")])
    assert same.token_f1 == same.rouge_l == same.bleu == pytest.approx(1.0)
    # No 4-gram in common → corpus BLEU-4 is 0 while unigram overlap is perfect.
    shuffled = score_similarity([("a dog barks loudly", "loudly barks dog a", "en")])
    assert shuffled.bleu == 0.0 and shuffled.token_f1 == pytest.approx(1.0)


def test_similarity_empty_accounting_and_characters() -> None:
    score = score_similarity(
        [("birds sing", "birds sing", "en"), ("rain falls", "", "en"), ("", "noise", "en")]
    )
    assert score.n_rows == 3 and score.n_scored == 2
    assert score.n_empty_ref == 1 and score.n_empty_hyp == 1
    assert score.token_f1 == pytest.approx(0.5)  # 1.0 and 0.0
    zh = score_similarity([("狗在叫", "狗叫", "zh")])
    assert zh.token_f1 == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
