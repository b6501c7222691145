"""MiDashengLM backend on a tiny stand-in checkpoint loaded through trust_remote_code, offline."""

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
from earmark.models.midashenglm import MiDashengLMModel
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
MAX_NEW = 6
LENGTHS = [1000, 8000, 16_005, 24_000, 40_000, 52_000, 64_000, 96_000]  # 0.06 s - 6 s
ASR, CAPTION = TaskRequest(name="asr"), TaskRequest(name="caption")


def _window(n: int, i: int = 0) -> Window:
    return window_of(MiDashengLMModel, n, i)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint("midashenglm", tmp_path_factory.mktemp("mdl") / "tiny_mdl")


@pytest.fixture(scope="module")
def model(ckpt):
    return MiDashengLMModel(str(ckpt), device="cpu", max_new_tokens=MAX_NEW)


@pytest.fixture(scope="module")
def windows():
    return [_window(n, i) for i, n in enumerate(LENGTHS)]


def test_loads_through_trust_remote_code_offline(model):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    cls = type(model.model)
    assert cls.__name__ == "MiDashengLMModel"
    assert cls.__module__.startswith("transformers_modules.")
    assert model.fast and model.device == "cpu"
    assert model_class("midashenglm") is MiDashengLMModel
    assert model.audio_id == model.model.config.audio_token_id


def test_prompt_format(model):
    text = model.render(prompt_for("midashenglm", ASR))
    assert text == (
        "<|im_start|>system\nYou are a helpful language and speech assistant.<|im_end|>\n"
        "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>Transcribe the speech into text "
        "<|en|><|im_end|>\n<|im_start|>assistant\n"
    )
    template, model.chat_template = model.chat_template, None
    try:
        assert model.render(prompt_for("midashenglm", ASR)) == text
    finally:
        model.chat_template = template


def test_processor_semantics(model):
    ids, mask = G.left_pad([[5, 6, 7], [8]], model.pad_id, "cpu")
    assert ids.tolist() == [[5, 6, 7], [model.pad_id] * 2 + [8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    waves = [np.ones(4000, np.float32), np.ones(6000, np.float32)]
    values, lengths = model._batch(waves)
    assert values.shape == (2, 6000) and lengths.tolist() == [4000, 6000]
    assert float(values[0, 4000:].abs().sum()) == 0.0  # right-padded with zeros


@pytest.mark.parametrize(
    "n", [1, 3199, 3200, 2 * 3200 - 161, 2 * 3200 - 160, 16_000, 10 * SR + 17, 30 * SR]
)
def test_audio_token_count_across_boundaries(model, n):
    wave = MiDashengLMModel.prepare(seeded_samples(n, 2))["input_values"]
    assert len(wave) == max(n, 3200)
    tokens = max(1, int(1 + len(wave) / 160) // 4 // 5)
    ids = model.prompt_ids(ASR, len(wave))
    assert ids.count(model.audio_id) == tokens
    (audio,) = model.encode([wave])
    assert audio.shape == (tokens, 64)
    # the remote forward agrees: it splices exactly that many embeddings
    import torch

    ids_t = torch.tensor([ids])
    out = model.model(
        input_ids=ids_t,
        attention_mask=torch.ones_like(ids_t),
        input_values=torch.from_numpy(wave)[None],
        audio_length=torch.tensor([len(wave)]),
    )
    assert out.logits.shape[:2] == (1, len(ids))


def test_batch_of_8_equals_one_at_a_time(model, windows):
    tasks = [ASR, CAPTION]
    batched = model.trace(windows, tasks)
    for i, w in enumerate(windows):
        (single,) = model.trace([w], tasks)
        for t in tasks:
            problem = G.compare_traces(single[t.name], batched[i][t.name])
            assert problem is None, f"window {i} ({w.num_samples} samples), {t.name}: {problem}"
    assert model.fast, "the batched path fell back to the reference path"
    assert len({tuple(r["asr"].ids) for r in batched}) > 1  # the audio matters


def test_encode_once_equals_remote_generate(ckpt, model, windows):
    remote = MiDashengLMModel(str(ckpt), device="cpu", max_new_tokens=MAX_NEW, encode_once=False)
    assert not remote.fast
    tasks = [ASR, TaskRequest(name="mood", prompt="What mood is this?")]
    ours, theirs = model.trace(windows, tasks), remote.trace(windows, tasks)
    for i in range(len(windows)):
        for t in tasks:
            problem = G.compare_traces(theirs[i][t.name], ours[i][t.name])
            assert problem is None, f"window {i}, {t.name}: {problem}"
    assert remote.stats.encoder_passes == len(windows) * len(tasks)
    assert model.fast


def test_encoder_runs_once_for_all_tasks(model, windows, monkeypatch):
    encoder = model.model.audio_encoder
    calls = []
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    before = model.stats.encoder_passes
    tasks = parse_tasks('asr,caption,tags,mood="What mood is this?"')
    out = model.annotate(windows[:3], tasks)
    assert len(calls) == 1
    assert model.stats.encoder_passes - before == 3
    for row in out:
        for name in ("asr", "caption", "tags", "mood"):
            assert isinstance(row[name].text, str) and row[name].text.strip()
            assert row[name].avg_logprob is not None and row[name].avg_logprob <= 0.0
        assert parse_tags(row["tags"].text, "midashenglm")


def test_padding_fraction_is_measured(model):
    before_real, before_pad = model.stats.real_units, model.stats.padded_units
    model.annotate([_window(16_000, 0), _window(48_000, 1)], [ASR])
    real = model.stats.real_units - before_real
    padded = model.stats.padded_units - before_pad
    assert (real, padded) == (64_000, 96_000)


# -- bad input ----------------------------------------------------------------------------------


def test_empty_window_is_refused(model):
    with pytest.raises(ModelInputError, match="empty"):
        MiDashengLMModel.prepare(np.zeros(0, np.float32))
    w = Window("a.wav", 0, 0.0, 0.0, 0, {"input_values": np.zeros(3200, np.float32)})
    with pytest.raises(ModelInputError, match="empty"):
        model.annotate([w], [ASR])


def test_too_long_window_is_refused(model):
    with pytest.raises(ModelInputError, match="longer than 30 s"):
        MiDashengLMModel.prepare(np.zeros(31 * SR, np.float32))
    n = 31 * SR
    w = Window("a.wav", 0, 0.0, n / SR, n, {"input_values": np.zeros(n, np.float32)})
    with pytest.raises(ModelInputError, match="longer than"):
        model.annotate([w], [ASR])


def test_nan_input_is_refused(model):
    x = seeded_samples(8000, 0)
    x[3] = np.inf
    with pytest.raises(ModelInputError, match="NaN"):
        MiDashengLMModel.prepare(x)
    w = _window(8000)
    w.features["input_values"] = w.features["input_values"].copy()
    w.features["input_values"][7] = np.nan
    with pytest.raises(ModelInputError, match="NaN"):
        model.annotate([w], [ASR])


def test_missing_features_are_refused(model):
    with pytest.raises(ModelInputError, match="no 'input_values'"):
        model.annotate([Window("a.wav", 0, 0.0, 0.5, 8000, {})], [ASR])


def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        MiDashengLMModel(str(tmp_path / "nowhere"), device="cpu")


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("model.safetensors", "weights"),
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer"),
        ("modeling_midashenglm.py", "modeling_midashenglm.py"),
    ],
)
def test_checkpoint_missing_files(ckpt, tmp_path, remove, named):
    dst = copy_checkpoint(ckpt, tmp_path)
    (dst / remove).unlink()
    with pytest.raises(ModelLoadError, match=named.replace(".", r"\.")):
        MiDashengLMModel(str(dst), device="cpu")


def test_checkpoint_of_another_family(tmp_path):
    other = build_tiny_checkpoint("eureka", tmp_path / "eureka")
    with pytest.raises(ModelLoadError, match="is a eureka checkpoint"):
        MiDashengLMModel(str(other), device="cpu")


def test_tokenizer_without_audio_token_is_refused(ckpt, tmp_path):
    dst = copy_checkpoint(ckpt, tmp_path)
    tok = json.loads((dst / "tokenizer.json").read_text())
    for entry in tok["added_tokens"]:
        if entry["content"] == "<|AUDIO|>":
            entry["content"] = "<|SOUND|>"
    (dst / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    for entry in cfg.get("added_tokens_decoder", {}).values():
        if entry["content"] == "<|AUDIO|>":
            entry["content"] = "<|SOUND|>"
    cfg["additional_special_tokens"] = [
        "<|SOUND|>" if t == "<|AUDIO|>" else t for t in cfg.get("additional_special_tokens", [])
    ]
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    (dst / "special_tokens_map.json").unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match=r"no <\|AUDIO\|> token"):
        MiDashengLMModel(str(dst), device="cpu")


def test_dasheng_count_matches_features_module():
    assert F.dasheng_num_tokens(30 * SR) == 150


def test_tasks_share_one_audio_prefill(model, windows, monkeypatch):
    tasks = parse_tasks('caption,tags,mood="What mood is this?"')  # no system prompt: one group
    assert_tasks_share_one_audio_prefill(
        model, model.model.decoder, windows[:4], tasks, monkeypatch
    )
