"""Packing plan and transcript split: pure functions, exercised on hand-built token sequences."""

from __future__ import annotations

from earmark.models.whisper_pack import (
    MAX_SPILL_S,
    PACK_GAP_S,
    PACK_MAX_WINDOW_S,
    PACK_SPAN_S,
    Pack,
    Segment,
    parse_timestamped,
    plan_packs,
    split_pack,
)

SR = 16_000
TS = 1000  # first timestamp token in these hand-built sequences
EOT = 900  # special tokens sit in [EOT, TS)
WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def decode(ids: list[int]) -> str:
    return " ".join(WORDS[i] for i in ids)


def ts(seconds: float) -> int:
    return TS + round(seconds / 0.02)


def seconds(*durations: float) -> list[int]:
    return [int(d * SR) for d in durations]


def test_plan_keeps_order_fills_the_span_and_leaves_long_or_lonely_windows_alone() -> None:
    packs, alone = plan_packs(seconds(4, 4, 4, 4, 4, 4, 4, 20, 3))
    # 4 s + 0.5 s gap: six windows fill 27 s of the 29 s span, the seventh opens a new pack
    assert [p.members for p in packs] == [(0, 1, 2, 3, 4, 5), (6, 8)]
    assert alone == [7]  # 20 s > PACK_MAX_WINDOW_S
    assert packs[0].spans_s[1] == (4 + PACK_GAP_S, 8 + PACK_GAP_S)
    for p in packs:
        assert p.spans_s[-1][1] + PACK_GAP_S <= PACK_SPAN_S
    # a window that finds no partner runs alone; two at the limit still share one input
    packs, alone = plan_packs(seconds(PACK_MAX_WINDOW_S + 0.5, PACK_MAX_WINDOW_S - 1, 25))
    assert [p.members for p in packs] == []
    assert alone == [0, 1, 2]
    packs, alone = plan_packs(seconds(PACK_MAX_WINDOW_S, PACK_MAX_WINDOW_S))
    assert [p.members for p in packs] == [(0, 1)] and alone == []
    assert plan_packs([]) == ([], [])


def test_parse_reads_segments_skips_special_tokens_and_reports_an_unclosed_one() -> None:
    tokens = [ts(0), 1, 2, ts(2.0), ts(2.0), EOT + 3, 3, ts(4.5), ts(5.0), 4]
    segments, unclosed = parse_timestamped(tokens, TS, EOT, 0.02, decode)
    assert segments == [Segment(0.0, 2.0, "one two"), Segment(2.0, 4.5, "three")]
    assert unclosed == 5.0
    segments, unclosed = parse_timestamped([ts(0), 1, ts(1.0)], TS, EOT, 0.02, decode)
    assert segments == [Segment(0.0, 1.0, "one")] and unclosed is None
    # an empty pair of timestamps is no segment; words with no opening timestamp start at 0
    assert parse_timestamped([ts(0), ts(0)], TS, EOT, 0.02, decode) == ([], None)
    assert parse_timestamped([2, ts(1.0)], TS, EOT, 0.02, decode) == (
        [Segment(0.0, 1.0, "two")],
        None,
    )


PACK = Pack(members=(7, 3, 5), spans_s=((0.0, 4.0), (4.5, 8.5), (9.0, 13.0)))


def test_split_gives_each_segment_to_the_window_it_lies_in() -> None:
    # timestamps are coarse: a segment may run into the gap or start early
    segs = [
        Segment(0.0, 4.6, "a"),
        Segment(4.4, 6.0, "b"),
        Segment(6.0, 8.6, "c"),
        Segment(9.0, 13.0, "d"),
    ]
    texts, redo = split_pack(PACK, segs, None)
    assert texts == {7: "a", 3: "b c", 5: "d"} and redo == []


def test_split_sends_back_what_it_cannot_place_with_certainty() -> None:
    # a segment across the gap between windows 7 and 3 may merge both windows' words
    texts, redo = split_pack(PACK, [Segment(2.0, 7.0, "x"), Segment(9.0, 13.0, "d")], None)
    assert texts == {5: "d"} and redo == [3, 7]
    # a segment that runs well into the next window's audio may hold that window's first words
    assert 0.3 < MAX_SPILL_S < 0.7
    texts, redo = split_pack(PACK, [Segment(0.0, 5.2, "a b"), Segment(8.8, 13.0, "d")], None)
    assert texts == {5: "d"} and redo == [3, 7]  # 82 % in window 7, but 0.7 s into window 3
    # ... while the usual slack (a segment opened 0.3 s early, in the last one's audio) is kept
    texts, redo = split_pack(PACK, [Segment(0.0, 3.7, "a"), Segment(3.7, 8.5, "b"),
                                    Segment(8.5, 13.0, "d")], None)  # fmt: skip
    assert texts == {7: "a", 3: "b", 5: "d"} and redo == []
    # a window with no segment (noise, or words the decoder skipped) is redone alone
    texts, redo = split_pack(PACK, [Segment(0.0, 4.0, "a"), Segment(9.0, 13.0, "d")], None)
    assert texts == {7: "a", 5: "d"} and redo == [3]
    # the budget ran out inside window 3: it and every later window are redone
    texts, redo = split_pack(PACK, [Segment(0.0, 4.0, "a")], 5.0)
    assert texts == {7: "a"} and redo == [3, 5]
    # a zero-length segment goes to the window holding its start; outside all, distrust all
    texts, redo = split_pack(
        PACK, [Segment(1.0, 1.0, "a"), Segment(5.0, 5.0, "b"), Segment(9.5, 12.0, "d")], None
    )
    assert texts == {7: "a", 3: "b", 5: "d"} and redo == []
    texts, redo = split_pack(PACK, [Segment(29.0, 29.0, "z")], None)
    assert texts == {} and redo == [3, 5, 7]
