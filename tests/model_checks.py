"""Checks shared by the tests of the transformers backends (eureka, midashenglm)."""

from __future__ import annotations

from typing import Any

from earmark.models import hf_common as H


def assert_tasks_share_one_audio_prefill(
    model: Any, lm: Any, windows: list, tasks: list, mp
) -> None:
    """Tasks whose prompts agree before the audio prefill each window's audio once, and each
    task's result equals the result of asking it alone."""
    calls: list[int] = []
    body = lm.model
    original = body.forward

    def counting(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("inputs_embeds") is not None:  # the audio prefix prefill
            calls.append(kwargs["inputs_embeds"].shape[0])
        return original(*args, **kwargs)

    mp.setattr(body, "forward", counting)
    together = model.trace(windows, tasks)
    assert calls == [len(windows)], f"audio prefills (rows each): {calls}"
    for t in tasks:
        alone = model.trace(windows, [t])
        for i in range(len(windows)):
            problem = H.compare_traces(alone[i][t.name], together[i][t.name])
            assert problem is None, f"window {i}, {t.name}: {problem}"
