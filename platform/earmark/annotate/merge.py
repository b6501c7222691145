"""Windows ↔ files: length buckets for the model calls, and the merge of a file's window
texts into its row fields (transcript and segments, caption, tags, custom answers)."""

from __future__ import annotations

from typing import Any

from earmark.audio.windows import Window
from earmark.contracts import TaskRequest
from earmark.models.prompts import clean_text, join_window_texts, parse_tags


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
    windows: list[Window], texts: list[dict[str, str]], tasks: list[TaskRequest], family: str
) -> dict[str, Any]:
    """Row fields for one file from its windows' texts (windows in file order)."""
    order = sorted(range(len(windows)), key=lambda i: windows[i].index)
    ws = [windows[i] for i in order]
    ts = [texts[i] for i in order]
    out: dict[str, Any] = {}
    for task in tasks:
        parts = [clean_text(t.get(task.name, "")) for t in ts]
        if task.name == "asr":
            out["transcript"] = join_window_texts(parts)
            out["segments"] = [
                {"start_s": w.start_s, "end_s": w.end_s, "transcript": p}
                for w, p in zip(ws, parts, strict=True)
            ]
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
    return out
