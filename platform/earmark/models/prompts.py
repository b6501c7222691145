"""Prompts per task and family, and the parsers that turn model text into row values.

Prompts follow each family's own reference:
- eureka: `Alittleegg/Eureka-Audio` `infer.py` + paper §8.4. ASR is a system prompt with the audio
  alone; caption and QA put the question after the audio; tagging has no official prompt (QA form).
- midashenglm: `xiaomi-research/dasheng-lm` `evaluate/prompt.csv` (multi-label answers: `a;b;c`).
- moss: `OpenMOSS/MOSS-Audio` usage guide / `infer.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from earmark.contracts import TaskRequest


@dataclass(frozen=True)
class Prompt:
    system: str | None  # system message, None for none
    user: str | None  # user text after the audio, None for audio alone


TAGS_QUESTION = (
    "Which labels describe the sounds in this audio? "
    "Answer with a short list of labels separated by semicolons."
)

PROMPTS: dict[str, dict[str, Prompt]] = {
    "eureka": {
        "asr": Prompt("You are an advanced ASR (Automatic Speech Recognition) AI assistant.", None),
        "caption": Prompt(
            None,
            "Please provide a comprehensive description of the input audio, covering all details.",
        ),
        "tags": Prompt(None, TAGS_QUESTION),
    },
    "midashenglm": {
        "asr": Prompt(None, "Transcribe the speech into text <|en|>"),
        "caption": Prompt(None, "Write an audio caption describing the sound"),
        "tags": Prompt(None, "Which labels describe the sound?"),
    },
    "moss": {
        "asr": Prompt("You are a helpful assistant.", "Please transcribe this audio."),
        "caption": Prompt("You are a helpful assistant.", "Describe this audio."),
        "tags": Prompt("You are a helpful assistant.", TAGS_QUESTION),
    },
}

# Separators a family uses between labels (MiDashengLM answers "a;b;c").
TAG_SEPARATORS: dict[str, str] = {
    "eureka": r"[;,\n]|\band\b",
    "midashenglm": r"[;\n]",
    "moss": r"[;,\n]|\band\b",
}


def prompt_for(family: str, task: TaskRequest) -> Prompt:
    """The prompt a family uses for a task; custom prompts go after the audio as the user text."""
    if task.is_custom:
        system = PROMPTS.get(family, {}).get("caption", Prompt(None, None)).system
        return Prompt(system, task.prompt)
    try:
        return PROMPTS[family][task.name]
    except KeyError:
        raise ValueError(f"family {family!r} has no prompt for task {task.name!r}") from None


_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


def clean_text(text: str) -> str:
    """Strip a leading (empty) think block and surrounding whitespace."""
    return _THINK.sub("", text or "").strip()


def parse_tags(text: str, family: str = "eureka") -> list[str]:
    """Normalized label list: split on the family's separators, lowercase, trimmed, deduplicated."""
    sep = TAG_SEPARATORS.get(family, r"[;,\n]")
    labels: list[str] = []
    for part in re.split(sep, clean_text(text)):
        label = re.sub(r"^[\s\-*•\d.)]+", "", part)  # list bullets / numbering
        label = label.strip().strip(".:;\"'").strip().lower()
        label = re.sub(r"\s+", " ", label)
        if label and label not in labels:
            labels.append(label)
    return labels


def join_window_texts(texts: list[str]) -> str:
    """Stitch per-window texts in order with single spaces."""
    return " ".join(t.strip() for t in texts if t and t.strip())
