"""Reference list cells (labels, choices) in every accepted form, and multiple-choice accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from earmark.contracts import JobError, rows_to_table
from earmark.evaluation import evaluate
from earmark.evaluation.choices import answer_index, named_options, read_choices, score_choices
from earmark.evaluation.tagging import parse_labels, read_list


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Speech, Music", ["speech", "music"]),  # a comma list
        ("Speech,Music", ["speech", "music"]),
        ("speech, music", ["speech", "music"]),  # lower case: every comma separates
        ('["Speech", "Music"]', ["speech", "music"]),  # JSON list as text
        ("['Speech', 'Music']", ["speech", "music"]),  # Python list as text (pandas)
        (["Speech", "Music"], ["speech", "music"]),  # a real list
        ("Speech; Music", ["speech", "music"]),
        ("Speech\nMusic", ["speech", "music"]),
        # AudioSet display names keep their lower-case synonyms after ", "
        ("Child speech, kid speaking, Music", ["child speech and kid speaking", "music"]),
        ("Telephone dialing, DTMF; Speech", ["telephone dialing and dtmf", "speech"]),
        ("Speech and singing, Music", ["speech and singing", "music"]),  # " and " stays inside
        ("Bark,Dog,Domestic_animals_and_pets", ["bark", "dog", "domestic animals and pets"]),
        ("狗, 猫", ["狗", "猫"]),
        ("", []),
        (None, []),
    ],
)
def test_labels_in_every_form(value: object, expected: list[str]) -> None:
    assert parse_labels(value) == expected


@pytest.mark.parametrize("value", ["[Speech, Music", '{"a": 1}', {"a": 1}, [["Speech"]], True])
def test_unreadable_lists_raise_with_the_fix(value: object) -> None:
    with pytest.raises(ValueError, match="JSON list"):
        read_list(value)


def _output(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    full = [{"audio_id": f"id{i}", "status": "ok", **r} for i, r in enumerate(rows)]
    pq.write_table(rows_to_table(full), out / "part-0.parquet")
    return out


def _refs(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "refs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_comma_labels_are_scored_as_two_classes(tmp_path: Path) -> None:
    out = _output(
        tmp_path,
        [
            {"uri": str(tmp_path / "a.wav"), "tags_raw": "Speech; Music"},
            {"uri": str(tmp_path / "b.wav"), "tags_raw": "Music"},
        ],
    )
    refs = _refs(tmp_path, [{"uri": "a.wav", "labels": "Speech, Music"},
                            {"uri": "b.wav", "labels": "Music"}])  # fmt: skip
    tags = evaluate(str(out), str(refs)).tags
    assert tags is not None
    assert tags.n_classes == 2 and tags.map == 1.0 and tags.recall == 1.0


def test_unreadable_labels_are_refused_with_file_and_row(tmp_path: Path) -> None:
    out = _output(tmp_path, [{"uri": str(tmp_path / "a.wav"), "tags_raw": "Speech"}])
    refs = _refs(tmp_path, [{"uri": "a.wav", "labels": "Speech"},
                            {"uri": "b.wav", "labels": '["Speech", Music]'}])  # fmt: skip
    with pytest.raises(JobError, match=r"refs\.jsonl: row 2: labels .* JSON list"):
        evaluate(str(out), str(refs))


CHOICES = ["a dog barking", "a cat meowing", "A car horn", "rain"]


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ("B", {1}),
        ("(B)", {1}),
        ("B.", {1}),
        ("b", {1}),
        ("Answer: B", {1}),
        ("The correct answer is (B).", {1}),
        ("B. a cat meowing", {1}),
        ("  A CAT   meowing. ", {1}),  # the option's text, case and spaces ignored
        ("A car horn", {2}),  # an option starting with "A" is not the letter A
        ("A dog barks loudly", set()),  # a sentence: neither a letter nor an option's text
        ("B. a dog barking", {0, 1}),  # a letter and another option's text
        ("(A) or (B)", {0, 1}),
        ("E", set()),  # no fifth option
        ("", set()),
        (None, set()),
    ],
)
def test_named_options(answer: str | None, named: set[int]) -> None:
    assert named_options(answer, CHOICES) == named


def test_reference_answers_and_choice_forms() -> None:
    assert answer_index("C", CHOICES) == 2
    assert answer_index("rain", CHOICES) == 3
    assert read_choices("(A) dog; (B) cat") == ["dog", "cat"]  # the options' own letters dropped
    assert read_choices('["yes", "no"]') == ["yes", "no"]
    assert read_choices("Yes, No") == ["Yes", "No"]
    with pytest.raises(ValueError, match="names none of the choices"):
        answer_index("thunder", CHOICES)


def test_score_choices_counts() -> None:
    score = score_choices(
        [
            (CHOICES, 1, "B"),
            (CHOICES, 1, "a cat meowing"),
            (CHOICES, 0, "B"),
            (CHOICES, 0, "(A) or (B)"),
            (CHOICES, 0, "I hear a dog"),
            (CHOICES, 3, ""),
            (CHOICES, None, "A"),  # no reference answer: not scored
        ]
    )
    assert (score.n_rows, score.n_scored, score.n_correct) == (7, 6, 2)
    assert (score.n_empty_ref, score.n_empty_hyp) == (1, 1)
    assert (score.n_named_none, score.n_named_several) == (1, 1)
    assert score.accuracy == pytest.approx(2 / 6)


def test_multiple_choice_through_evaluate(tmp_path: Path) -> None:
    from rich.console import Console

    from earmark.evaluation import check_thresholds, print_result

    def ans(name: str, text: str) -> list[dict[str, str]]:
        return [{"name": "caption", "prompt": "?", "text": "noise"},
                {"name": name, "prompt": "Which?", "text": text}]  # fmt: skip

    out = _output(
        tmp_path,
        [
            {"uri": str(tmp_path / "a.wav"), "answers": ans("mcq", "(B)")},
            {"uri": str(tmp_path / "b.wav"), "answers": ans("mcq", "rain")},
            {"uri": str(tmp_path / "c.wav"), "answers": ans("mcq", "A or C")},
            {"uri": str(tmp_path / "d.wav"), "answers": ans("mcq", "it is quiet")},
        ],
    )
    refs = _refs(
        tmp_path,
        [
            {"uri": "a.wav", "choices": CHOICES, "answer": "B"},
            {"uri": "b.wav", "choices": "dog; cat; rain", "answer": "rain"},
            {"uri": "c.wav", "choices": '["x", "y", "z"]', "answer": "(C)"},
            {"uri": "d.wav", "answer": "it is quiet"},  # open question: similarity
        ],
    )
    result = evaluate(str(out), str(refs), answer_task="mcq")
    assert result.choices is not None
    assert (result.choices.n_scored, result.choices.n_correct) == (3, 2)
    assert result.metrics()["choice_accuracy"] == pytest.approx(2 / 3)
    assert result.answer is not None and result.answer.n_rows == 1
    assert result.answer.token_f1 == pytest.approx(1.0)
    assert check_thresholds(result, ["choice_accuracy>=0.9"])  # crossed, by a known name
    console = Console(record=True, width=200)
    print_result(result, console=console)
    assert "Multiple choice" in console.export_text()
    assert '"choices"' in result.model_dump_json()


def test_a_reference_answer_outside_its_choices_is_refused(tmp_path: Path) -> None:
    out = _output(tmp_path, [{"uri": str(tmp_path / "a.wav")}])
    refs = _refs(tmp_path, [{"uri": "a.wav", "choices": "dog; cat", "answer": "C"}])
    with pytest.raises(JobError, match=r"refs\.jsonl: row 1: answer 'C' names none"):
        evaluate(str(out), str(refs))
    refs = _refs(tmp_path, [{"uri": "a.wav", "choices": "dog", "answer": "dog"}])
    with pytest.raises(JobError, match=r"row 1: choices 'dog' .* 1 option"):
        evaluate(str(out), str(refs))
