"""Base of the transformers remote-code backends (eureka, midashenglm): one `trace`/`annotate`
over a fast path through the model's submodules and the model's own `generate` as reference.

The fast path is "encode once, ask many": every task of a window reuses its audio encoding AND
the LLM prefill of the audio (the KV cache of the prompt up to and just past the audio). On real
checkpoints the audio prefill (hundreds of audio tokens through the LLM) costs about as much as
the encoder, so sharing only the encoder output would still pay it once per task.

The fast path relies on submodule names from third-party ports of the real checkpoint; when a
checkpoint lacks them, or the first fast call fails on an interface mismatch, the backend warns and
uses the reference path instead of failing.
"""

from __future__ import annotations

import abc
import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

from earmark.audio.windows import Window
from earmark.contracts import TaskRequest
from earmark.models import hf_common as H
from earmark.models import hf_generate as G
from earmark.models.base import AudioModel, BatchStats, ModelInputError, prefix_groups
from earmark.models.result import TaskText

log = logging.getLogger(__name__)


class RemoteCodeModel(AudioModel):
    """A backend with a fast batched path and a reference path over the same weights."""

    fast_path: ClassVar[str]  # what the fast path is called in warnings
    fallback_errors: ClassVar[tuple[type[Exception], ...]] = (
        AttributeError,
        TypeError,
        RuntimeError,
    )
    fast_submodules: ClassVar[str]  # what the fast path needs, named in the fallback warning
    stop_tokens: ClassVar[tuple[str, ...]] = ("<|im_end|>", "<|endoftext|>")  # first required
    _fast_ok = False  # the fast path has worked once: later errors are real errors

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        fast: bool = True,
        **load: Any,
    ) -> None:
        super().__init__(checkpoint, **load)  # device, dtype, revision, max_new_tokens
        family = self.info.name
        local, self.checkpoint = H.validate_checkpoint(self.checkpoint, family, self.revision)
        tok = self.tokenizer = H.load_tokenizer(self.checkpoint, family, self.revision, local)
        self.chat_template = H.load_chat_template(tok, self.checkpoint, self.revision, local)
        self.eos_ids = [H.token_id(tok, self.stop_tokens[0], self.checkpoint)]
        for extra in self.stop_tokens[1:]:
            if tok.convert_tokens_to_ids(extra) not in (None, tok.unk_token_id):
                self.eos_ids.append(int(tok.convert_tokens_to_ids(extra)))
        self._check_checkpoint(local)  # family token ids and files, before the weights load
        self.model = H.load_remote_model(
            self.checkpoint,
            family,
            device=self.device,
            dtype=self.dtype_name,
            revision=self.revision,
            local=local,
        )
        self.fast = fast
        if fast and not self._has_submodules():
            self._fall_back(f"the checkpoint lacks {self.fast_submodules}")
        self._prompts: dict[TaskRequest, tuple[list[int], list[int]]] = {}

    @abc.abstractmethod
    def _check_checkpoint(self, local: bool) -> None:
        """Look up the family's special token ids; refuse (ModelLoadError) what cannot work."""

    @abc.abstractmethod
    def _has_submodules(self) -> bool:
        """Whether the loaded model has what the fast path calls."""

    @abc.abstractmethod
    def _input(self, w: Window) -> Any:
        """The model input of one window (checked), from its prepared features."""

    @abc.abstractmethod
    def _run_fast(self, inputs: list[Any], tasks: list[TaskRequest], with_scores: bool) -> Any:
        """[window][task] traces through the submodules, encoding each window once."""

    @abc.abstractmethod
    def _run_reference(
        self, inputs: list[Any], tasks: list[TaskRequest], with_scores: bool
    ) -> list[dict[str, G.Trace]]:
        """Traces per window and task through the model's own `generate`."""

    def _fall_back(self, why: str) -> None:
        warnings.warn(
            f"{self.name}: {self.fast_path} path unavailable ({why}); using the model's own "
            f"generate (the reference path), which re-encodes the audio for every task",
            stacklevel=3,
        )
        self.fast = False

    def apply_template(
        self, messages: list[dict[str, Any]], placeholder: str, **options: Any
    ) -> str | None:
        """The checkpoint's chat template rendered for generation (see `apply_template`)."""
        template = getattr(self, "chat_template", None)
        return apply_template(self.tokenizer, template, messages, placeholder, self.name, **options)

    def annotate(
        self, windows: list[Window], tasks: list[TaskRequest]
    ) -> list[dict[str, TaskText | str]]:
        runs = self.trace(windows, tasks, with_scores=False)
        return [
            {name: G.task_text(self.tokenizer, row, self.eos_ids) for name, row in r.items()}
            for r in runs
        ]

    def trace(
        self, windows: list[Window], tasks: list[TaskRequest], *, with_scores: bool = True
    ) -> list[dict[str, G.Trace]]:
        """Generated ids (and per-step scores) per window and task, for parity checks."""
        self.check_tasks(tasks)
        inputs = [self._input(w) for w in windows]
        if not windows or not tasks:
            return [{} for _ in windows]
        if self.fast:
            try:
                rows = self._run_fast(inputs, tasks, with_scores)
                self._fast_ok = True
                return [{t.name: row[k] for k, t in enumerate(tasks)} for row in rows]
            except ModelInputError:
                raise
            except self.fallback_errors as e:
                if self._fast_ok:
                    raise
                self._fall_back(f"{type(e).__name__}: {e}")
        return self._run_reference(inputs, tasks, with_scores)


def apply_template(
    tokenizer: Any,
    chat_template: str | None,
    messages: list[dict[str, Any]],
    placeholder: str,
    name: str,
    **options: Any,
) -> str | None:
    """A chat template rendered for generation, or None when there is no template or it does
    not give exactly one audio placeholder (callers then render the documented format by hand).
    """
    if not chat_template:
        return None
    text = tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template,
        add_generation_prompt=True,
        tokenize=False,
        **options,
    )
    if text.count(placeholder) != 1:
        log.warning(
            "%s: chat template gave %d audio placeholders; using the documented format",
            name,
            text.count(placeholder),
        )
        return None
    return text


def annotate_tasks(
    lm: Any,
    audio: list[Any],
    audio_id: int,
    halves: list[tuple[list[int], list[int]]],
    pad_id: int,
    gen_kwargs: dict[str, Any],
    stop_ids: Sequence[int],
    trace: bool,
    stats: BatchStats | None = None,
) -> list[list[G.Trace]]:
    """Traces [window][task] for windows with audio embeddings `audio` ([tokens_i, hidden]) and
    tasks whose prompt ids around the audio placeholder are `halves`.

    Per group of tasks sharing their ids before the audio (`prefix_groups`): one prefill of each
    window's prefix, the cache repeated once per task, one batched `generate` over all rows.
    """
    results: list[list[Any]] = [[None] * len(halves) for _ in audio]
    for members, shared in prefix_groups(halves):
        before, after = halves[members[0]]
        heads = [before + [audio_id] * int(a.shape[0]) + after[:shared] for a in audio]
        tails = [halves[t][1][shared:] for t in members]
        rows = generate_from_prefix(
            lm, heads, audio, audio_id, tails, pad_id, gen_kwargs, stop_ids, trace, stats
        )
        for i in range(len(audio)):
            for k, t in enumerate(members):
                results[i][t] = rows[i * len(members) + k]
    return results


def generate_from_prefix(
    lm: Any,
    heads: list[list[int]],
    audio: list[Any],
    audio_id: int,
    tails: list[list[int]],
    pad_id: int,
    gen_kwargs: dict[str, Any],
    stop_ids: Sequence[int],
    trace: bool,
    stats: BatchStats | None = None,
) -> list[G.Trace]:
    """Rows window-major ([w0 t0, w0 t1, ..., w1 t0, ...]): prefill `heads` (left-padded, audio
    embeddings at `audio_id`) once, then continue each with every tail.

    A row is [left pad][head][pad][tail]: the tails are right-aligned so generation appends at
    one column; positions follow the attention mask (cumsum), so every real token keeps the
    position it has in its own unpadded prompt and results equal one-at-a-time runs.
    """
    import torch
    from transformers import DynamicCache

    device = lm.device
    ids_h, mask_h = G.left_pad(heads, pad_id, device)
    embeds = lm.get_input_embeddings()(ids_h)
    is_audio = (ids_h == audio_id) & mask_h.bool()
    embeds[is_audio] = torch.cat(list(audio)).to(embeds.dtype)
    pos = mask_h.long().cumsum(-1) - 1
    pos.masked_fill_(mask_h == 0, 1)
    body = getattr(lm, "model", None)  # the decoder stack without its head: no prefix logits
    runner = body if isinstance(body, torch.nn.Module) else lm
    out = runner(
        inputs_embeds=embeds,
        attention_mask=mask_h,
        position_ids=pos,
        past_key_values=DynamicCache(),
        use_cache=True,
    )
    cache = out.past_key_values
    n_tails = len(tails)
    cache.batch_repeat_interleave(n_tails)
    ids_t, mask_t = G.left_pad(tails, pad_id, device)
    ids = torch.cat([ids_h.repeat_interleave(n_tails, 0), ids_t.repeat(len(heads), 1)], 1)
    mask = torch.cat([mask_h.repeat_interleave(n_tails, 0), mask_t.repeat(len(heads), 1)], 1)
    if stats is not None:
        stats.windows += len(heads) * n_tails
        stats.real_units += int(mask_h.sum()) + len(heads) * int(mask_t.sum())
        stats.padded_units += ids_h.numel() + len(heads) * ids_t.numel()
    rec = G.LogProbRecorder()
    gen = lm.generate(
        input_ids=ids,
        attention_mask=mask,
        past_key_values=cache,
        **gen_kwargs,
        **G.recorder_kwargs(rec),
    )
    return G.generated_rows(gen, ids, stop_ids, trace, rec)
