"""OpenAI transcription response formats from an output row: json, text, verbose_json, srt, vtt.

Segments are the row's segments (earmark cuts long audio in pauses; a short clip is one
segment). verbose_json carries the fields OpenAI's schema lists with the row's measured values:
`avg_logprob` (mean token log-probability), `no_speech_prob` (Whisper; null for other
families), `words` per segment and for the whole text (Whisper word timings), and earmark's
`flags`; `tokens` is empty (the row keeps no token ids). A segment the speech gate kept from the
model has no text and is left out, as OpenAI leaves out silence.
"""

from __future__ import annotations

import math
from typing import Any

from earmark.models.quality import compression_ratio

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
LANGUAGE_NAMES = {"en": "english"}  # OpenAI reports the language by name


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def segments_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    segs = row.get("segments") or []
    if not segs and row.get("transcript"):
        end = row.get("duration_s") or 0.0
        segs = [{"start_s": 0.0, "end_s": end, "transcript": row["transcript"]}]
    return [s for s in segs if (s.get("transcript") or "").strip()]


def to_srt(row: dict[str, Any]) -> str:
    blocks = [
        f"{i}\n{_clock(s['start_s'], ',')} --> {_clock(s['end_s'], ',')}\n"
        f"{s['transcript'].strip()}\n"
        for i, s in enumerate(segments_of(row), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(row: dict[str, Any]) -> str:
    blocks = [
        f"{_clock(s['start_s'], '.')} --> {_clock(s['end_s'], '.')}\n{s['transcript'].strip()}\n"
        for s in segments_of(row)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _words(s: dict[str, Any]) -> list[dict[str, Any]] | None:
    if s.get("words") is None:
        return None
    return [{"word": w["word"], "start": w["start_s"], "end": w["end_s"]} for w in s["words"]]


def to_verbose_json(row: dict[str, Any], language: str) -> dict[str, Any]:
    segments = [
        {
            "id": i,
            "seek": int(s["start_s"] * 100),  # Whisper's seek is in 10 ms frames
            "start": s["start_s"],
            "end": s["end_s"],
            "text": s["transcript"],
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": s.get("avg_logprob"),
            "compression_ratio": compression_ratio(s["transcript"]),
            "no_speech_prob": s.get("no_speech_prob"),
            "words": _words(s),
            "flags": s.get("flags") or [],
        }
        for i, s in enumerate(segments_of(row))
    ]
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(language, language),
        "duration": row.get("duration_s") or 0.0,
        "text": row.get("transcript") or "",
        "segments": segments,
        "flags": row.get("flags") or [],
        "speech_s": row.get("speech_s"),
        "usage": usage(row),
    }
    if segments and all(seg["words"] is not None for seg in segments):
        body["words"] = [w for seg in segments for w in seg["words"]]
    return body


def usage(row: dict[str, Any]) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(row.get("duration_s") or 0.0)}
