"""Windows ↔ files: length buckets for the model calls, and the merge of a file's window
outputs into its row fields (transcript and segments, caption, tags, custom answers, speech,
language and quality flags)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from earmark.audio.windows import Window
from earmark.contracts import TaskRequest
from earmark.models.prompts import clean_text, join_window_texts, parse_tags
from earmark.models.quality import flags_for, merge_flags
from earmark.models.result import TaskText, as_task_text


def bucket_windows(windows: list[Window], batch_size: int) -> list[list[int]]:
    """Indices of windows grouped into batches of similar length (longest first)."""
    order = sorted(range(len(windows)), key=lambda i: -windows[i].num_samples)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padding_of(windows: list[Window], buckets: list[list[int]]) -> tuple[int, int]:
    """(real, padded) sample counts if each bucket is padded to its longest window."""
    real = sum(w.num_samples for w in windows)
    padded = sum(max(windows[i].num_samples for i in b) * len(b) for b in buckets if b)
    return real, padded


def merge_windows(
    windows: list[Window],
    texts: list[dict[str, TaskText | str]],
    tasks: list[TaskRequest],
    family: str,
    *,
    drop_flagged: bool = False,
    language: str | None = None,
) -> dict[str, Any]:
    """Row fields for one file from its windows' outputs (any order; merged in file order).

    `language`: the language the user fixed (wins over any detection)."""
    order = sorted(range(len(windows)), key=lambda i: windows[i].index)
    ws = [windows[i] for i in order]
    outs = [{k: as_task_text(v) for k, v in texts[i].items()} for i in order]
    out: dict[str, Any] = {"flags": []}
    if all(w.speech_s is not None for w in ws):
        out["speech_s"] = round(sum(w.speech_s or 0.0 for w in ws), 3)
    for task in tasks:
        results = [o.get(task.name, TaskText("")) for o in outs]
        parts = [clean_text(r.text) for r in results]
        flags = [flags_for(r, asr=task.name == "asr") for r in results]
        out["flags"] = merge_flags(out["flags"], *flags)
        if task.name == "asr":
            segments = asr_segments(ws, results, parts, flags, drop_flagged)
            out["segments"] = segments
            out["transcript"] = join_window_texts([s["transcript"] or "" for s in segments])
            out["language"] = language or file_language(ws, results)
        elif task.name == "caption":
            out["caption"] = join_window_texts(parts)
        elif task.name == "tags":
            labels: list[str] = []
            for p in parts:
                labels += [lab for lab in parse_tags(p, family) if lab not in labels]
            out["tags"] = labels
            out["tags_raw"] = "\n".join(parts)
        else:
            out.setdefault("answers", []).append(
                {"name": task.name, "prompt": task.prompt, "text": join_window_texts(parts)}
            )
    if "language" not in out and language:
        out["language"] = language
    return out


def asr_segments(
    ws: list[Window],
    results: list[TaskText],
    parts: list[str],
    flags: list[list[str]],
    drop_flagged: bool,
) -> list[dict[str, Any]]:
    """Segment dicts (file times) of the windows' ASR outputs: one per window, or one per timed
    span when the backend gives spans (MOSS time markers)."""
    segments = []
    for w, r, text, fl in zip(ws, results, parts, flags, strict=True):
        common = {
            "speech_fraction": w.speech_fraction,
            "avg_logprob": r.avg_logprob,
            "no_speech_prob": r.no_speech_prob,
            "flags": fl,
        }
        dropped = drop_flagged and bool(fl)  # any flag takes the text out
        if r.spans:
            for a, b, piece in r.spans:
                segments.append(
                    {
                        "start_s": round(w.start_s + a, 3),
                        "end_s": round(min(w.end_s, w.start_s + b), 3),
                        "transcript": None if dropped else piece,
                        "words": None,
                        **common,
                    }
                )
            continue
        words = None
        if r.words is not None:
            spans = snap_to_speech([(x.start_s, x.end_s) for x in r.words], w.speech)
            words = [
                {
                    "word": x.word.strip(),
                    "start_s": round(w.start_s + min(max(a, 0.0), w.duration_s), 3),
                    "end_s": round(w.start_s + min(max(b, a, 0.0), w.duration_s), 3),
                    "probability": x.probability,
                }
                for x, (a, b) in zip(r.words, spans, strict=True)
            ]
        segments.append(
            {
                "start_s": w.start_s,
                "end_s": w.end_s,
                "transcript": None if dropped else text,
                "words": words,
                **common,
            }
        )
    return segments


def snap_to_speech(
    words: list[tuple[float, float]], speech: tuple[tuple[float, float], ...] | None
) -> list[tuple[float, float]]:
    """Word times (window seconds) kept inside the speech region each overlaps most.

    Cross-attention alignment stretches a word that borders silence into it (measured on the
    bench's sentences: last words ending up to 1.1 s late, first words starting 0.4 s early);
    silero-vad knows where the silence is. A word touching no region is left as it is; times
    stay in order."""
    if not speech:
        return list(words)
    out: list[tuple[float, float]] = []
    floor = 0.0
    for a, b in words:
        best = max(speech, key=lambda r: min(b, r[1]) - max(a, r[0]))
        if min(b, best[1]) > max(a, best[0]):  # it overlaps speech: clip it to that region
            a, b = max(a, best[0]), min(b, best[1])
        a = max(a, floor)
        b = max(b, a)
        floor = b
        out.append((a, b))
    return out


def file_language(ws: list[Window], results: list[TaskText]) -> str | None:
    """The language detected over the file's windows that were decoded with speech, weighted by
    their speech seconds (all windows count, not the first); None when none was detected."""
    votes: Counter[str] = Counter()
    for w, r in zip(ws, results, strict=True):
        if r.language and r.text.strip():
            votes[r.language] += w.speech_s if w.speech_s is not None else w.duration_s
    return votes.most_common(1)[0][0] if votes else None
