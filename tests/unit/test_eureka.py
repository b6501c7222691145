"""Eureka backend on a tiny stand-in checkpoint loaded through trust_remote_code, offline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from earmark.audio import features as F
from earmark.audio.windows import Window
from earmark.contracts import TaskRequest, parse_tasks
from earmark.models import hf_generate as G
from earmark.models.base import ModelInputError, ModelLoadError
from earmark.models.eureka import AUDIO_PAD, EMPTY_THINK, EurekaModel
from earmark.models.prompts import parse_tags, prompt_for
from earmark.models.registry import model_class
from earmark.testing.tiny import build_tiny_checkpoint
from model_checks import (
    assert_tasks_share_one_audio_prefill,
    copy_checkpoint,
    seeded_samples,
    window_of,
)

SR = 16_000
MAX_NEW = 6  # generated tokens per task: enough to compare, cheap on 2 CPU cores
LENGTHS = [3 * 1280, 8000, 16_005, 24_000, 40_000, 52_000, 64_000, 96_000]  # 0.24 s - 6 s
ASR, CAPTION = TaskRequest(name="asr"), TaskRequest(name="caption")


def _window(n: int, i: int = 0) -> Window:
    return window_of(EurekaModel, n, i)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint("eureka", tmp_path_factory.mktemp("eureka") / "tiny_eureka")


@pytest.fixture(scope="module")
def model(ckpt):
    return EurekaModel(str(ckpt), device="cpu", max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def windows():
    return [_window(n, i) for i, n in enumerate(LENGTHS)]


def test_loads_through_trust_remote_code_offline(model):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    cls = type(model.model)
    assert cls.__name__ == "EurekaAudioForCausalLM"
    assert cls.__module__.startswith("transformers_modules.")  # the checkpoint's own code
    assert model.fast and model.device == "cpu" and model.dtype_name == "float32"
    assert model_class("eureka") is EurekaModel
    assert model.eos_ids == [
        model.tokenizer.convert_tokens_to_ids("<|im_end|>"),
        model.tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]


def test_prompt_follows_reference_format(model):
    asr = model.render(prompt_for("eureka", ASR))
    assert asr == (
        "<|im_start|>system\nYou are an advanced ASR (Automatic Speech Recognition) AI "
        "assistant.<|im_end|>\n<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>"
        "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    caption = model.render(prompt_for("eureka", CAPTION))
    assert caption.startswith("<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>Please")
    assert caption.endswith(EMPTY_THINK)
    # the documented format (used when a checkpoint has no template) renders the same text
    template, model.chat_template = model.chat_template, None
    try:
        assert model.render(prompt_for("eureka", ASR)) == asr
        assert model.render(prompt_for("eureka", CAPTION)) == caption
    finally:
        model.chat_template = template


def test_audio_pads_carry_token_type_3(model):
    ids, types = model.prompt_ids(ASR, 5)
    pad = model.tokenizer.convert_tokens_to_ids(AUDIO_PAD)
    assert ids.count(pad) == 5
    assert [t == 3 for t in types] == [i == pad for i in ids]
    first = ids.index(pad)
    assert ids[first - 1] == model.tokenizer.convert_tokens_to_ids("<|audio_start|>")
    assert ids[first + 5] == model.tokenizer.convert_tokens_to_ids("<|audio_end|>")


@pytest.mark.parametrize("n", [1, 1279, 1280, 1281, 2 * 1280, 30 * SR - 1, 30 * SR])
def test_audio_token_count_across_boundaries(model, n):
    tokens = -(-n // 1280)
    mel = EurekaModel.prepare(seeded_samples(n, 1))["mel"]
    assert mel.shape == (128, 8 * tokens)
    (audio,) = model.encode([mel])
    assert audio.shape == (tokens, 64)  # first `frames` adapter outputs, hidden size 64
    ids, _ = model.prompt_ids(ASR, audio.shape[0])
    assert ids.count(model.audio_pad_id) == tokens


def test_batch_of_8_equals_one_at_a_time(model, windows):
    tasks = [ASR, CAPTION]
    batched = model.trace(windows, tasks)
    for i, w in enumerate(windows):
        (single,) = model.trace([w], tasks)
        for t in tasks:
            problem = G.compare_traces(single[t.name], batched[i][t.name])
            assert problem is None, f"window {i} ({w.num_samples} samples), {t.name}: {problem}"
    # the audio matters: different windows give different text
    assert model.fast, "the batched path fell back to the reference path"
    assert len({tuple(r["asr"].ids) for r in batched}) > 1


@pytest.mark.slow
def test_batched_path_equals_reference_path(ckpt, model, windows):
    reference = EurekaModel(str(ckpt), device="cpu", max_new_tokens=MAX_NEW, batched=False)
    assert not reference.fast
    # caption and mood share the audio prefill (no system prompt); asr has its own
    tasks = [ASR, CAPTION, TaskRequest(name="mood", prompt="What mood is this?")]
    few = windows[::3]
    ours = model.trace(few, tasks)
    theirs = reference.trace(few, tasks)
    for i in range(len(few)):
        for t in tasks:
            problem = G.compare_traces(theirs[i][t.name], ours[i][t.name])
            assert problem is None, f"window {i}, {t.name}: {problem}"
    texts = lambda m: [{k: v.text for k, v in r.items()} for r in m.annotate(few, tasks)]  # noqa: E731
    assert texts(model) == texts(reference)
    assert model.fast
    # the reference re-encodes for every task; the batched path once per window
    assert reference.stats.encoder_passes == 2 * len(few) * len(tasks)


def test_encoder_runs_once_for_all_tasks(model, windows, monkeypatch):
    encoder = model.model.audio_encoder.speech_encoder
    calls = []
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    before = model.stats.encoder_passes
    tasks = parse_tasks('asr,caption,tags,mood="What mood is this?"')
    out = model.annotate(windows[:3], tasks)
    assert len(calls) == 1
    assert model.stats.encoder_passes - before == 3
    assert all(set(r) == {"asr", "caption", "tags", "mood"} for r in out)


def test_annotate_returns_text_for_every_task(model, windows):
    tasks = parse_tasks('asr,caption,tags,mood="What mood is this?"')
    out = model.annotate(windows[:2], tasks)
    assert len(out) == 2
    for row in out:
        for name in ("asr", "caption", "tags", "mood"):
            assert isinstance(row[name].text, str) and row[name].text.strip()
        assert parse_tags(row["tags"].text, "eureka")
    stats = model.stats
    assert 0.0 < stats.padding_fraction < 1.0  # short windows pad the 30 s chunk
    assert 0.0 <= model.prefill_stats.padding_fraction < 1.0


def test_falls_back_to_reference_when_submodules_missing(ckpt, tmp_path, windows):
    dst = copy_checkpoint(ckpt, tmp_path, "renamed_eureka")
    code = dst / "modeling_eureka_audio.py"
    code.write_text(code.read_text().replace("audio_moe_adaptor", "adapter"))
    with pytest.warns(UserWarning, match="reference path"):
        m = EurekaModel(str(dst), device="cpu", max_new_tokens=2)
    assert not m.fast
    (row,) = m.annotate(windows[:1], [ASR])
    assert isinstance(row["asr"].text, str) and row["asr"].avg_logprob is not None


# -- bad input ----------------------------------------------------------------------------------


def test_empty_window_is_refused(model):
    with pytest.raises(ModelInputError, match="empty"):
        EurekaModel.prepare(np.zeros(0, np.float32))
    w = Window("a.wav", 0, 0.0, 0.0, 0, {"mel": np.zeros((128, 0), np.float32)})
    with pytest.raises(ModelInputError, match="empty"):
        model.annotate([w], [ASR])


def test_too_long_window_is_refused(model):
    with pytest.raises(ModelInputError, match="longer than 30 s"):
        EurekaModel.prepare(np.zeros(31 * SR, np.float32))
    n = 31 * SR
    w = Window("a.wav", 3, 0.0, n / SR, n, {"mel": np.zeros((128, 3104), np.float32)})
    with pytest.raises(ModelInputError, match="longer than"):
        model.annotate([w], [ASR])


def test_nan_input_is_refused(model):
    x = seeded_samples(8000, 0)
    x[10] = np.nan
    with pytest.raises(ModelInputError, match="NaN"):
        EurekaModel.prepare(x)
    w = _window(8000)
    w.features["mel"] = w.features["mel"].copy()
    w.features["mel"][0, 0] = np.nan
    with pytest.raises(ModelInputError, match="NaN"):
        model.annotate([w], [ASR])


def test_missing_or_malformed_features_are_refused(model):
    w = Window("a.wav", 0, 0.0, 0.5, 8000, {})
    with pytest.raises(ModelInputError, match="no 'mel'"):
        model.annotate([w], [ASR])
    w = Window("a.wav", 0, 0.0, 0.5, 8000, {"mel": np.zeros((80, 50), np.float32)})
    with pytest.raises(ModelInputError, match="shape"):
        model.annotate([w], [ASR])


def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        EurekaModel(str(tmp_path / "nowhere"), device="cpu")


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("model.safetensors", "weights"),
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer"),
        ("modeling_eureka_audio.py", "modeling_eureka_audio.py"),
    ],
)
def test_checkpoint_missing_files(ckpt, tmp_path, remove, named):
    dst = copy_checkpoint(ckpt, tmp_path)
    (dst / remove).unlink()
    with pytest.raises(ModelLoadError, match=named.replace(".", r"\.")):
        EurekaModel(str(dst), device="cpu")


def test_checkpoint_of_another_family(tmp_path):
    other = build_tiny_checkpoint("midashenglm", tmp_path / "dasheng")
    with pytest.raises(ModelLoadError, match="is a midashenglm checkpoint"):
        EurekaModel(str(other), device="cpu")
    config = json.loads((other / "config.json").read_text())
    config.update(architectures=["LlamaForCausalLM"], model_type="llama", auto_map={})
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="not a eureka checkpoint"):
        EurekaModel(str(other), device="cpu")


def test_differing_mel_filters_warn(ckpt, tmp_path):
    dst = copy_checkpoint(ckpt, tmp_path)
    np.savez(dst / "mel_filters.npz", mel_128=F.slaney_mel_filters() * 1.01)
    with pytest.warns(UserWarning, match="mel_filters.npz differs"):
        EurekaModel(str(dst), device="cpu", max_new_tokens=2)


def test_tasks_share_one_audio_prefill(model, windows, monkeypatch):
    tasks = parse_tasks('caption,tags,mood="What mood is this?"')  # no system prompt: one group
    assert_tasks_share_one_audio_prefill(
        model, model.model.backbone, windows[:4], tasks, monkeypatch
    )


def test_confidence_is_the_mean_log_probability_of_the_picked_tokens(model, windows):
    """The recorder's per-token log-probabilities equal log_softmax of the traced step logits
    at the picked ids, on the batched and the reference path alike."""
    import numpy as np
    import torch

    traces = model.trace(windows[:2], [ASR, CAPTION])
    for row in (r[t] for r in traces for t in ("asr", "caption")):
        assert row.logprobs is not None and len(row.logprobs) == len(row.ids)
        want = torch.log_softmax(torch.from_numpy(row.scores), -1)
        picked = want[torch.arange(len(row.ids)), torch.tensor(row.ids)].numpy()
        np.testing.assert_allclose(row.logprobs, picked, atol=1e-4)
    text = model.annotate(windows[:1], [ASR])[0]["asr"]
    assert text.avg_logprob == pytest.approx(float(np.mean(traces[0]["asr"].logprobs)), abs=1e-4)
    assert text.truncated == (traces[0]["asr"].stopped_on is None)
