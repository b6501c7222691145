"""Tasks: what a job or a request asks of every file (built-in tasks and custom prompts)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

BUILTIN_TASKS = ("asr", "caption", "tags")
_TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class TaskRequest(BaseModel):
    """One thing to ask of every window: a built-in task or a named custom prompt."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="asr, caption, tags, or the name of a custom prompt")
    prompt: str | None = Field(default=None, description="Prompt text for a custom task")

    @model_validator(mode="after")
    def _check(self) -> TaskRequest:
        if not _TASK_NAME.match(self.name):
            raise ValueError(
                f"task name {self.name!r} must be lowercase letters, digits or '_' (≤40 chars)"
            )
        if self.name in BUILTIN_TASKS and self.prompt is not None:
            raise ValueError(f"built-in task {self.name!r} takes no prompt")
        if self.name not in BUILTIN_TASKS and not (self.prompt and self.prompt.strip()):
            raise ValueError(
                f"unknown task {self.name!r}: use one of {', '.join(BUILTIN_TASKS)} "
                f'or a custom prompt written name="prompt text"'
            )
        return self

    @property
    def is_custom(self) -> bool:
        return self.name not in BUILTIN_TASKS


def parse_tasks(items: str | list[str] | list[TaskRequest]) -> list[TaskRequest]:
    """Parse `asr,caption,tags` or `["asr", 'mood="What mood is this?"']` into task requests."""
    if isinstance(items, str):
        items = _split_task_list(items)
    out: list[TaskRequest] = []
    for item in items:
        if isinstance(item, TaskRequest):
            out.append(item)
            continue
        if isinstance(item, dict):
            out.append(TaskRequest(**item))
            continue
        text = str(item).strip()
        if "=" in text:
            name, prompt = text.split("=", 1)
            out.append(TaskRequest(name=name.strip(), prompt=prompt.strip().strip('"').strip("'")))
        else:
            out.append(TaskRequest(name=text))
    names = [t.name for t in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"task(s) requested twice: {', '.join(sorted(dup))}")
    if not out:
        raise ValueError("no task requested: give at least one of asr, caption, tags")
    return out


def _split_task_list(text: str) -> list[str]:
    """Split on commas that are not inside a quoted prompt (prompts may contain commas).

    A quote opens only where a prompt starts (right after `=`), so an apostrophe elsewhere is
    a letter; a quote that never closes is an error, not a silently shortened prompt.
    """
    parts: list[str] = []
    buf: list[str] = []
    quote = None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'" and "".join(buf).rstrip().endswith("="):
            quote = ch
        elif ch == ",":
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if quote:
        raise ValueError(f"unterminated {quote} quote in tasks {text!r}")
    parts.append("".join(buf))
    return [p for p in (p.strip() for p in parts) if p]
