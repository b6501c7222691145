"""The `moss` backend on a tiny offline checkpoint: loading, strict names, batching, all tasks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from earmark.audio.windows import Window  # noqa: E402
from earmark.contracts import ModelSpec, TaskRequest  # noqa: E402
from earmark.models.base import ModelInputError, ModelLoadError  # noqa: E402
from earmark.models.moss import MossModel, audio_token_count  # noqa: E402
from earmark.models.registry import load_model  # noqa: E402
from earmark.testing.tiny_moss import build_tiny_moss  # noqa: E402

TASKS = [
    TaskRequest(name="asr"),
    TaskRequest(name="caption"),
    TaskRequest(name="tags"),
    TaskRequest(name="mood", prompt="What mood does this audio convey?"),
]
DURATIONS_S = [0.5, 1.3, 2.0, 2.7, 3.1, 4.0, 5.5, 7.9]  # 8 windows of different lengths


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: two threads per process thrash
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return build_tiny_moss(tmp_path_factory.mktemp("tiny-moss"), init_std=0.1)


@pytest.fixture(scope="module")
def model(ckpt: Path) -> MossModel:
    return MossModel(str(ckpt), device="cpu", max_new_tokens=10)


def _window(i: int, seconds: float) -> Window:
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * 16_000)) / 16_000
    x = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size)
    x = x.astype(np.float32)
    return Window("clip", i, 0.0, seconds, x.size, MossModel.prepare(x))


def _copy(ckpt: Path, dst: Path) -> Path:
    shutil.copytree(ckpt, dst)
    return dst


def test_save_load_round_trip(ckpt: Path, model: MossModel, tmp_path: Path) -> None:
    saved = load_file(str(ckpt / "model.safetensors"))
    live = model.model.state_dict()
    assert set(saved) == set(live)
    assert all(torch.equal(saved[k], live[k]) for k in saved)
    model.model.save_pretrained(tmp_path)
    model.tokenizer.save_pretrained(tmp_path)
    again = MossModel(str(tmp_path), device="cpu", max_new_tokens=10)
    assert all(torch.equal(again.model.state_dict()[k], live[k]) for k in live)
    assert again.ids == model.ids
    w = [_window(0, 1.0)]
    assert again.annotate_ids(w, TASKS[:1]) == model.annotate_ids(w, TASKS[:1])


def test_batch_greedy_equals_one_at_a_time(model: MossModel) -> None:
    windows = [_window(i, s) for i, s in enumerate(DURATIONS_S)]
    passes = model.stats.encoder_passes
    batch = model.annotate_ids(windows, TASKS)
    assert model.stats.encoder_passes == passes + 1  # one encoder pass for 8 windows x 4 tasks
    alone = [model.annotate_ids([w], TASKS)[0] for w in windows]
    assert batch == alone
    # the check means something only if the audio changes the output
    assert len({tuple(row[0]) for row in batch}) > len(windows) // 2
    assert all(len(ids) > 0 for row in batch for ids in row)


def test_tasks_share_one_audio_prefill_and_match_full_prompts(
    model: MossModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    windows = [_window(i, s) for i, s in enumerate(DURATIONS_S[:3])]
    prefills: list[int] = []
    original = model.model.forward

    def counting(*args, **kwargs):
        if kwargs.get("audio_embeds") is not None:
            prefills.append(args[0].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model.model, "forward", counting)
    shared = model.annotate_ids(windows, TASKS)
    assert prefills == [len(windows)]  # one audio prefill for 3 windows x 4 tasks
    monkeypatch.undo()
    # the same rows as whole prompts, prefilled from scratch one at a time
    from earmark.models.moss_arch import pack_rows

    for i, w in enumerate(windows):
        mel = torch.from_numpy(w.features["mel"])[None]
        audio, deep, lens = model.model.encode_audio(mel, torch.tensor([mel.shape[-1]]))
        for t, task in enumerate(TASKS):
            ids = torch.tensor([model.prompt_ids(task, int(lens[0]))])
            rows = torch.tensor([0])
            out = model.model.generate_greedy(
                ids,
                torch.ones_like(ids),
                audio_embeds=pack_rows(audio, lens, rows),
                deepstack_embeds=[pack_rows(d, lens, rows) for d in deep],
                audio_input_mask=ids == model.ids["audio"],
                max_new_tokens=model.max_new_tokens,
                stop_ids=model.ids["stop"],
                pad_id=model.ids["pad"],
            )[0].tolist()
            cut = next((k for k, x in enumerate(out) if x in model.ids["stop"]), len(out))
            assert shared[i][t] == out[:cut], f"window {i}, task {task.name}"


def test_rows_split_over_several_generate_calls_give_the_same_ids(ckpt: Path) -> None:
    windows = [_window(i, s) for i, s in enumerate(DURATIONS_S[:3])]
    small = MossModel(str(ckpt), device="cpu", max_new_tokens=10, max_batch_rows=5)
    big = MossModel(str(ckpt), device="cpu", max_new_tokens=10)
    assert small.annotate_ids(windows, TASKS) == big.annotate_ids(windows, TASKS)


def test_annotate_runs_every_task(model: MossModel) -> None:
    windows = [_window(i, s) for i, s in enumerate([1.0, 2.5])]
    out = model.annotate(windows, TASKS)
    assert len(out) == 2
    for row in out:
        assert set(row) == {"asr", "caption", "tags", "mood"}
        for v in row.values():  # text with the decoder's confidence and whether it ran out
            assert isinstance(v.text, str) and v.avg_logprob is not None
            assert v.avg_logprob <= 0.0 and isinstance(v.truncated, bool)
    # a row that stopped early holds one more log-probability (its stop token) than ids
    rows = model.annotate_rows(windows, TASKS[:1])
    for ids, lps, stopped in (r[0] for r in rows):
        assert len(lps) == len(ids) + stopped
        assert stopped or len(ids) == model.max_new_tokens
    assert all(len(layer._forward_hooks) == 0 for layer in model.model.language_model.layers)


def test_prompt_layout_follows_the_reference(model: MossModel) -> None:
    n = 30  # 2.4 s: one time marker ("2") after 25 audio tokens
    ids = model.prompt_ids(TASKS[0], n)
    tok = model.tokenizer
    audio = model.ids["audio"]
    assert ids.count(audio) == n
    first = ids.index(model.ids["audio_start"])
    span = ids[first + 1 : ids.index(model.ids["audio_end"])]
    assert span == [audio] * 25 + [tok.convert_tokens_to_ids("2")] + [audio] * 5
    text = tok.decode([t for t in ids if t != audio])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|audio_bos|>2<|audio_eos|>\nPlease transcribe this audio.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_time_markers_can_be_turned_off(ckpt: Path, tmp_path: Path) -> None:
    off = MossModel(str(ckpt), device="cpu", time_markers=False)
    assert off.prompt_ids(TASKS[0], 60).count(off.ids["digits"][2]) == 0
    d = _copy(ckpt, tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "enable_time_marker": False}))
    assert MossModel(str(d), device="cpu").time_markers is False
    assert MossModel(str(ckpt), device="cpu").time_markers is True


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_wrong_weight_names_fail_naming_the_key(ckpt: Path, tmp_path: Path, change: str) -> None:
    d = _copy(ckpt, tmp_path / "ck")
    tensors = load_file(str(d / "model.safetensors"))
    if change == "missing":
        key = "deepstack_audio_merger_list.1.up_proj.weight"
        del tensors[key]
    else:
        key = "audio_encoder.out_proj.weight"
        tensors[key] = torch.zeros(4, 4)
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=f"{change} key.*{re.escape(key)}"):
        MossModel(str(d), device="cpu")


def test_missing_files_and_wrong_family_fail_clearly(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        MossModel(str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(ModelLoadError, match="cannot get MOSS-Audio checkpoint"):
        MossModel("nobody-here/no-such-moss", device="cpu")  # HF_HUB_OFFLINE=1, nothing cached
    d = _copy(ckpt, tmp_path / "ck")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        MossModel(str(d), device="cpu")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "audio_token_id": 7}))
    (d / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match="maps <\\|AUDIO\\|> to 3 but config says 7"):
        MossModel(str(d), device="cpu")
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen3"}))
    with pytest.raises(ModelLoadError, match="model_type 'qwen3'"):
        MossModel(str(d), device="cpu")
    (d / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="config.json"):
        MossModel(str(d), device="cpu")


def test_bad_windows_are_refused(model: MossModel) -> None:
    good = _window(0, 1.0)
    nan = Window("clip", 1, 0.0, 1.0, good.num_samples, {"mel": good.features["mel"].copy()})
    nan.features["mel"][0, 0] = np.nan
    with pytest.raises(ModelInputError, match="NaN"):
        model.annotate([good, nan], TASKS[:1])
    too_long = Window("clip", 2, 0.0, 31.0, 31 * 16_000, good.features)
    with pytest.raises(ModelInputError, match="longer than"):
        model.annotate([too_long], TASKS[:1])
    no_mel = Window("clip", 3, 0.0, 1.0, 16_000, {})
    with pytest.raises(ModelInputError, match="mel"):
        model.annotate([no_mel], TASKS[:1])


def test_registry_loads_the_moss_family(ckpt: Path) -> None:
    m = load_model(ModelSpec.parse(f"moss:{ckpt}", device="cpu", max_new_tokens=3))
    assert isinstance(m, MossModel) and m.max_new_tokens == 3
    w = _window(0, 30.0)
    assert audio_token_count(w.features["mel"].shape[1]) == 375
    out = m.annotate([w], [TaskRequest(name="caption")])
    assert isinstance(out[0]["caption"].text, str)


def test_timed_asr_lines_become_spans(model: MossModel, monkeypatch) -> None:
    """An ASR answer written as "[start - end] text" lines (what MOSS's timestamped ASR gives)
    becomes timed spans; any other text stays one untimed piece."""
    tok = model.tokenizer
    timed = tok.encode("[0.00 - 1.50] first words\n[1.50 - 2.40] second words")
    plain = tok.encode("first words second words")
    rows = [[(timed, [-0.5] * (len(timed) + 1), True)], [(plain, [-0.1] * len(plain), False)]]
    monkeypatch.setattr(model, "annotate_rows", lambda windows, tasks: rows)
    first, second = model.annotate([_window(0, 2.5), _window(1, 2.5)], TASKS[:1])
    asr = first["asr"]
    assert asr.spans == ((0.0, 1.5, "first words"), (1.5, 2.4, "second words"))
    assert asr.text == "first words second words" and asr.avg_logprob == pytest.approx(-0.5)
    assert second["asr"].spans is None and second["asr"].truncated
