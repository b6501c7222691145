"""Packing short windows into one 30 s Whisper input, and splitting the transcript back.

Whisper pads every input to 30 s before its encoder, so a 4 s window costs as much encoder work
as a 30 s one. Packing lays several short windows end to end, with `PACK_GAP_S` of silence
between them, into one input that is decoded *with* timestamp tokens. Each timestamped segment
is then given to the window its time span overlaps most. Only assignments that are unambiguous
are kept:

- a segment whose best window holds less than `MIN_OVERLAP` of its span, or that reaches more
  than `MAX_SPILL_S` into another window's audio (it straddles a gap: two windows' words may be
  merged), sends every window it touches back to the one-window path;
- a window that receives no segment (noise, silence, or speech the decoder skipped) goes back
  too, so an empty transcript always comes from the one-window rules (no-speech threshold);
- a segment that never got its closing timestamp (the token budget ran out) sends its window and
  every later one back.

Windows that go back are transcribed alone by the caller, so packing can only change which
encoder pass a window's words come from, never drop them. All functions here are pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE_RATE = 16_000  # Hz
PACK_SPAN_S = 29.0  # s of audio (gaps included) per packed input: timestamps stop at 30.0 s
PACK_GAP_S = 0.5  # s of silence between packed windows: Whisper ends a segment in the pause
# s: two windows this long (+ gaps) just fill one span; longer ones run alone
PACK_MAX_WINDOW_S = 14.0
MIN_OVERLAP = 0.75  # fraction of a segment's span that must lie in the window it is given to
# s a segment may reach into another window's audio. Whisper often opens a segment where the
# last one closed and tiny.en rounds times to whole seconds, so well-placed segments reach up to
# ~0.3 s into a neighbour (demo clips); a segment that ran 0.75 s into the next window had taken
# that window's first words (a real recording cut mid-sentence: "...directly with a primary")
MAX_SPILL_S = 0.5


@dataclass(frozen=True)
class Segment:
    """One timestamped piece of a packed transcript; times in seconds from the input start."""

    start_s: float
    end_s: float
    text: str
    tokens: tuple[int, ...] = field(default=(), compare=False)  # its text tokens


@dataclass(frozen=True)
class Pack:
    """Windows (by index in the call) laid out in one input, with their spans in seconds."""

    members: tuple[int, ...]
    spans_s: tuple[tuple[float, float], ...]
    gap_s: float = PACK_GAP_S  # silence after each window

    @property
    def gap_samples(self) -> int:
        return int(round(self.gap_s * SAMPLE_RATE))


def plan_packs(
    lengths: list[int], span_s: float = PACK_SPAN_S, gap_s: float = PACK_GAP_S
) -> tuple[list[Pack], list[int]]:
    """Greedy, in call order: packs of ≥ 2 windows, and the windows left to run alone.

    Order is kept (the Annotator already buckets windows of similar length together), which
    makes the plan a pure function of the lengths: the same batch always packs the same way.
    """
    packs: list[Pack] = []
    alone: list[int] = []
    current: list[int] = []
    used_s = 0.0

    def close() -> None:
        if len(current) >= 2:
            spans, t = [], 0.0
            for i in current:
                spans.append((t, t + lengths[i] / SAMPLE_RATE))
                t += lengths[i] / SAMPLE_RATE + gap_s
            packs.append(Pack(tuple(current), tuple(spans), gap_s))
        else:
            alone.extend(current)
        current.clear()

    for i, n in enumerate(lengths):
        d = n / SAMPLE_RATE
        if d > PACK_MAX_WINDOW_S:
            alone.append(i)
            continue
        if current and used_s + d + gap_s > span_s:
            close()
            used_s = 0.0
        current.append(i)
        used_s += d + gap_s
    close()
    return packs, sorted(alone)


def parse_timestamped(
    tokens: list[int], timestamp_begin: int, eot: int, precision_s: float, decode
) -> tuple[list[Segment], float | None]:
    """Segments of a timestamped token sequence, and where an unclosed segment starts (or None).

    Whisper writes `<|t0|> words <|t1|>` per segment (`<|t1|><|t1|>` between segments). Tokens
    at or above `eot` and below `timestamp_begin` are special tokens and carry no text.
    """
    segments: list[Segment] = []
    start: float | None = None
    text: list[int] = []
    for tok in tokens:
        if tok >= timestamp_begin:
            t = (tok - timestamp_begin) * precision_s
            if start is None:
                start = t
            else:
                words = decode(text).strip() if text else ""
                if words:
                    segments.append(Segment(start, t, words, tuple(text)))
                start, text = None, []
        elif tok < eot:
            text.append(tok)
            if start is None:  # words without an opening timestamp: treat as opened at 0
                start = segments[-1].end_s if segments else 0.0
    unclosed = start if text and decode(text).strip() else None
    return segments, unclosed


def split_pack(
    pack: Pack, segments: list[Segment], unclosed_s: float | None
) -> tuple[dict[int, str], list[int]]:
    """Texts of the pack's windows that were resolved, and the windows to run alone."""
    assigned, redo = assign_pack(pack, segments, unclosed_s)
    texts = {w: " ".join(segments[k].text for k in ks) for w, ks in assigned.items()}
    return texts, redo


def assign_pack(
    pack: Pack, segments: list[Segment], unclosed_s: float | None
) -> tuple[dict[int, list[int]], list[int]]:
    """The segments (indices, in order) of each window of the pack that was resolved, and the
    windows to run alone."""
    # each window owns its span plus half of each neighbouring gap
    owned = [(a - pack.gap_s / 2, b + pack.gap_s / 2) for a, b in pack.spans_s]
    parts: list[list[int]] = [[] for _ in pack.members]
    redo: set[int] = set()
    for j, seg in enumerate(segments):
        length = seg.end_s - seg.start_s
        overlaps = [max(0.0, min(seg.end_s, b) - max(seg.start_s, a)) for a, b in owned]
        if length <= 0:  # a zero-length segment: the window containing its start
            hits = [k for k, (a, b) in enumerate(owned) if a <= seg.start_s < b]
            if hits:
                parts[hits[0]].append(j)
            else:
                redo.update(range(len(pack.members)))  # outside every window: distrust it
            continue
        best = max(range(len(owned)), key=lambda k: overlaps[k])
        spills = [
            k
            for k, (a, b) in enumerate(pack.spans_s)
            if k != best and min(seg.end_s, b) - max(seg.start_s, a) > MAX_SPILL_S
        ]
        if overlaps[best] / length < MIN_OVERLAP or spills:
            redo.update(k for k, o in enumerate(overlaps) if o > 0)
            redo.update(spills)
        else:
            parts[best].append(j)
    if unclosed_s is not None:
        first = next((k for k, (_, b) in enumerate(owned) if unclosed_s < b), len(owned))
        redo.update(range(first, len(owned)))
    redo.update(k for k, p in enumerate(parts) if not p)
    assigned = {pack.members[k]: p for k, p in enumerate(parts) if k not in redo}
    return assigned, sorted(pack.members[k] for k in redo)
