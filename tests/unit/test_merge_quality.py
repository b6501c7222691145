"""A file's windows merged into its row: speech, confidence, word times in file time, flags,
drop_flagged, language and MOSS's timed spans (earmark.annotate.merge)."""

from __future__ import annotations

from earmark.annotate.merge import file_language, merge_windows
from earmark.audio.windows import Window
from earmark.contracts import OutputRow, TaskRequest, rows_to_table
from earmark.models.result import TaskText, Word

ASR, CAPTION = TaskRequest(name="asr"), TaskRequest(name="caption")


def win(i, start, end, speech):
    regions = None if speech is None else ((0.0, speech),)  # `speech` seconds, from the start
    return Window("f", i, start, end, int((end - start) * 16_000), {}, speech=regions)


def test_segments_carry_speech_confidence_flags_and_words_in_file_time():
    ws = [win(1, 20.0, 30.0, 0.0), win(0, 0.0, 20.0, 12.0)]  # given out of order
    texts = [
        {"asr": TaskText("", flags=("no_speech",)), "caption": "a dog barks"},
        {
            "asr": TaskText(
                "Hello there.",
                avg_logprob=-0.25,
                no_speech_prob=0.02,
                words=(Word("Hello", 1.0, 1.4, 0.9), Word("there.", 1.5, 25.0, 0.8)),
            ),
            "caption": TaskText("speech " * 30, truncated=True),
        },
    ]
    row = merge_windows(ws, texts, [ASR, CAPTION], "whisper")
    assert row["speech_s"] == 12.0 and row["transcript"] == "Hello there."
    first, second = row["segments"]
    assert (first["start_s"], first["end_s"], first["speech_fraction"]) == (0.0, 20.0, 0.6)
    assert first["avg_logprob"] == -0.25 and first["no_speech_prob"] == 0.02
    # words move to file time and stay inside the speech they overlap (0-12 s here)
    assert [(w["word"], w["start_s"], w["end_s"]) for w in first["words"]] == [
        ("Hello", 1.0, 1.4),
        ("there.", 1.5, 12.0),
    ]
    # with no speech measured, a word running past its window is cut at the window's end
    unmeasured = merge_windows([win(0, 0.0, 20.0, None)], texts[1:], [ASR], "whisper")
    assert unmeasured["segments"][0]["words"][1]["end_s"] == 20.0
    assert second["transcript"] == "" and second["flags"] == ["no_speech"]
    assert second["speech_fraction"] == 0.0 and second["avg_logprob"] is None
    # the row's flags: every task's, in a fixed order
    assert row["flags"] == ["no_speech", "repetition", "truncated"]
    assert row["language"] is None  # tiny.en-like: nothing detected, nothing given
    OutputRow(**row, audio_id="a", uri="f", status="ok")  # the contract accepts it
    table = rows_to_table([{**row, "audio_id": "a", "uri": "f", "status": "ok"}])
    assert table.column("segments")[0].as_py()[0]["words"][0]["word"] == "Hello"


def test_drop_flagged_leaves_flagged_text_out_and_keeps_the_flags():
    ws = [win(0, 0.0, 5.0, 4.0), win(1, 5.0, 10.0, 4.0)]
    texts = [{"asr": TaskText("Thank you.")}, {"asr": TaskText("The meeting starts now.")}]
    kept = merge_windows(ws, texts, [ASR], "whisper")
    assert kept["transcript"] == "Thank you. The meeting starts now."
    dropped = merge_windows(ws, texts, [ASR], "whisper", drop_flagged=True)
    assert dropped["transcript"] == "The meeting starts now."
    assert dropped["segments"][0]["transcript"] is None
    assert dropped["segments"][0]["flags"] == ["filler"] and dropped["flags"] == ["filler"]


def test_language_is_given_or_detected_over_the_speech_never_guessed():
    ws = [win(0, 0.0, 10.0, 1.0), win(1, 10.0, 20.0, 9.0), win(2, 20.0, 30.0, 8.0)]
    texts = [
        {"asr": TaskText("bonjour", language="fr")},
        {"asr": TaskText("guten Tag", language="de")},
        {"asr": TaskText("", language="en")},  # no text: its language says nothing
    ]
    assert merge_windows(ws, texts, [ASR], "whisper")["language"] == "de"
    given = merge_windows(ws, texts, [ASR], "whisper", language="fr")
    assert given["language"] == "fr"
    assert file_language(ws, [TaskText("x"), TaskText("y"), TaskText("z")]) is None
    # a caption-only row takes the user's language, and no detection
    assert merge_windows(ws, [{"caption": "c"}] * 3, [CAPTION], "whisper").get("language") is None
    caption = merge_windows(ws, [{"caption": "c"}] * 3, [CAPTION], "whisper", language="de")
    assert caption["language"] == "de"


def test_timed_spans_become_segments():
    ws = [win(0, 30.0, 60.0, 20.0)]
    spans = ((0.0, 2.5, "first part"), (2.5, 40.0, "second part"))
    row = merge_windows(
        ws, [{"asr": TaskText("first part second part", spans=spans)}], [ASR], "moss"
    )
    assert [(s["start_s"], s["end_s"], s["transcript"]) for s in row["segments"]] == [
        (30.0, 32.5, "first part"),
        (32.5, 60.0, "second part"),  # clipped to the window
    ]
    assert all(s["words"] is None for s in row["segments"])  # MOSS gives no word times


def test_unmeasured_speech_stays_null():
    row = merge_windows([win(0, 0.0, 1.0, None)], [{"asr": "hi"}], [ASR], "eureka")
    assert row.get("speech_s") is None
    assert row["segments"][0]["speech_fraction"] is None


def test_words_are_kept_inside_the_speech_they_overlap():
    from earmark.annotate.merge import snap_to_speech

    speech = ((1.0, 3.0), (4.0, 6.0))
    words = [(0.6, 1.4), (1.5, 2.0), (2.5, 3.9), (4.2, 4.4), (7.0, 7.5)]
    assert snap_to_speech(words, speech) == [
        (1.0, 1.4),  # began in the silence before the speech
        (1.5, 2.0),
        (2.5, 3.0),  # a last word stretched into the pause
        (4.2, 4.4),
        (7.0, 7.5),  # touches no speech: left alone
    ]
    assert snap_to_speech(words, None) == words
    ws = [Window("f", 0, 10.0, 20.0, 160_000, {}, speech=speech)]
    out = TaskText("a b c", words=(Word("a", 0.6, 1.4), Word("b", 2.5, 3.9), Word("c", 4.2, 4.4)))
    segment = merge_windows(ws, [{"asr": out}], [ASR], "whisper")["segments"][0]
    assert [(x["start_s"], x["end_s"]) for x in segment["words"]] == [
        (11.0, 11.4),
        (12.5, 13.0),
        (14.2, 14.4),
    ]
