"""earmark's MOSS-Audio architecture: official names, encoder lengths, batching, DeepStack hooks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from earmark.models.moss import audio_token_count  # noqa: E402
from earmark.models.moss_arch import MossAudioConfig, MossAudioModel, downsampled_length, pack_rows  # noqa: E402
from earmark.testing.tiny_moss import tiny_config, tiny_tokenizer  # noqa: E402

# The 4B release's config.json as described in models.md §3.1 (values asserted by a third party).
RELEASE_4B = {
    "architectures": ["MossAudioModel"],
    "model_type": "moss_audio",
    "adapter_hidden_size": 8192,
    "deepstack_num_inject_layers": 3,
    "ignore_index": -100,
    "num_hidden_layers": 36,
    "vocab_size": 151936,
    "eos_token_id": 151645,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "audio_config": {
        "d_model": 1280,
        "output_dim": 1280,
        "num_mel_bins": 128,
        "encoder_layers": 32,
        "encoder_attention_heads": 20,
        "encoder_ffn_dim": 5120,
        "downsample_rate": 8,
        "downsample_hidden_size": 480,
        "encoder_attention_window_size": 100,
        "n_window": 200,
        "max_source_positions": 1500,
        "dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "layer_norm_eps": 1e-5,
        "_attn_implementation": "eager",
        "pretrained_path": "",
        "deepstack_encoder_layer_indexes": [8, 16, 24],
    },
    "language_config": {
        "model_type": "qwen3",
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 40960,
        "eos_token_id": 151645,
        "tie_word_embeddings": False,
    },
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # 2 shared cores: two torch threads per process thrash (measured ~40x slower matmuls)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny() -> MossAudioModel:
    torch.manual_seed(0)
    cfg = tiny_config(tiny_tokenizer())
    cfg.language_config.initializer_range = 0.1  # peaked logits: audio visibly matters
    return MossAudioModel(cfg).eval()


def test_release_config_accepted_with_official_names_and_shapes() -> None:
    cfg = MossAudioConfig(**RELEASE_4B)
    assert cfg.num_deepstack == 3 and cfg.audio_token_id == 151654
    with torch.device("meta"):
        model = MossAudioModel(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 901  # tensor count of the release (models.md §3.1)
    assert shapes["audio_encoder.conv1.weight"] == (480, 1, 3, 3)
    assert shapes["audio_encoder.stem_proj.weight"] == (1280, 480 * 16)
    assert shapes["audio_encoder.layers.31.self_attn.q_proj.bias"] == (1280,)
    assert "audio_encoder.layers.0.self_attn.k_proj.bias" not in shapes  # Whisper: no k bias
    assert shapes["deepstack_audio_merger_list.2.gate_proj.weight"] == (8192, 1280)
    assert "deepstack_audio_merger_list.3.gate_proj.weight" not in shapes
    assert shapes["audio_adapter.down_proj.weight"] == (2560, 8192)
    assert shapes["language_model.layers.35.self_attn.q_norm.weight"] == (128,)
    assert shapes["language_model.embed_tokens.weight"] == (151936, 2560)
    assert shapes["lm_head.weight"] == (151936, 2560)  # untied
    assert not any("inv_timescales" in k or "rotary" in k for k in shapes)


def test_config_round_trip(tmp_path) -> None:
    MossAudioConfig(**RELEASE_4B).save_pretrained(tmp_path)
    back = MossAudioConfig.from_pretrained(tmp_path)
    assert back.model_type == "moss_audio"
    assert back.audio_config.deepstack_encoder_layer_indexes == [8, 16, 24]
    assert back.language_config.hidden_size == 2560 and back.adapter_hidden_size == 8192
    assert back.tie_word_embeddings is False


@pytest.mark.parametrize("frames", [1, 7, 8, 9, 17, 100, 333])
def test_encoder_output_length_follows_the_formula(tiny: MossAudioModel, frames: int) -> None:
    mel = torch.randn(1, 128, frames)
    with torch.inference_mode():
        audio, deep, lens = tiny.encode_audio(mel, torch.tensor([frames]))
    n = audio_token_count(frames)
    assert n == downsampled_length(frames) == int(lens[0])
    assert audio.shape == (1, n, 64) and len(deep) == 3
    assert all(d.shape == (1, n, 64) for d in deep)


def test_encoder_batch_equals_single(tiny: MossAudioModel) -> None:
    frames = [33, 150, 71, 400, 9, 256, 500, 123]
    mels = [torch.randn(128, f) for f in frames]
    batch = torch.zeros(8, 128, max(frames))
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    with torch.inference_mode():
        audio, deep, lens = tiny.encode_audio(batch, torch.tensor(frames))
        for i, m in enumerate(mels):
            a1, d1, l1 = tiny.encode_audio(m[None], torch.tensor([m.shape[1]]))
            n = int(l1[0])
            assert int(lens[i]) == n
            torch.testing.assert_close(audio[i, :n], a1[0], atol=1e-5, rtol=1e-4)
            for k in range(3):
                torch.testing.assert_close(deep[k][i, :n], d1[k][0], atol=1e-5, rtol=1e-4)


def _two_rows(model: MossAudioModel, lens: list[int]):
    """Left-padded ids of two rows with audio spans of different lengths, and the audio mask."""
    cfg = model.config
    a, bos, eos, pad = cfg.audio_token_id, cfg.audio_start_id, cfg.audio_end_id, 0
    seqs = [[40, 41, bos] + [a] * n + [eos, 42, 43, 44] for n in lens]
    seqs[1] = [45] + seqs[1]
    width = max(map(len, seqs)) + 2
    ids = torch.full((2, width), pad)
    mask = torch.zeros(2, width, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s)
        mask[r, width - len(s) :] = 1
    return ids, mask, (ids == a) & mask.bool()


def test_deepstack_adds_only_at_audio_positions_of_the_first_layers(tiny: MossAudioModel) -> None:
    """Each decoder layer's output is captured before and after the injection hook; the difference
    must be exactly the packed DeepStack embeddings at the audio positions of layers 0..2, zero at
    every other position, and zero everywhere in layers 3 and 4."""
    frames = [80, 200]
    mel = torch.zeros(2, 128, 200)
    mel[0, :, :80] = torch.randn(128, 80)
    mel[1] = torch.randn(128, 200)
    layers = tiny.language_model.layers
    raw: dict[int, torch.Tensor] = {}
    after: dict[int, torch.Tensor] = {}
    handles = []
    for k, layer in enumerate(layers):
        # registered before the model's own hooks, so this sees the output before injection
        handles.append(
            layer.register_forward_hook(lambda m, a, o, k=k: raw.__setitem__(k, o.clone()))
        )
        nxt = layers[k + 1] if k + 1 < len(layers) else tiny.language_model.norm
        handles.append(
            nxt.register_forward_pre_hook(lambda m, a, k=k: after.__setitem__(k, a[0].clone()))
        )
    try:
        with torch.inference_mode():
            audio, deep, lens = tiny.encode_audio(mel, torch.tensor(frames))
            ids, mask, amask = _two_rows(tiny, [int(n) for n in lens])
            rows = torch.tensor([0, 1])
            packed_deep = [pack_rows(d, lens, rows) for d in deep]
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            tiny(
                ids,
                attention_mask=mask,
                position_ids=position_ids,
                audio_embeds=pack_rows(audio, lens, rows),
                deepstack_embeds=packed_deep,
                audio_input_mask=amask,
            )
    finally:
        for h in handles:
            h.remove()
    assert amask.sum() == lens.sum() and lens.tolist() == [10, 25]
    for k in range(len(layers)):
        delta = after[k] - raw[k]
        assert torch.all(delta[~amask] == 0), f"layer {k} changed a non-audio position"
        if k < 3:
            torch.testing.assert_close(delta[amask], packed_deep[k], atol=1e-5, rtol=1e-5)
            # row 1's embeds land in row 1, in order: first audio position gets its frame 0
            first = int(amask[1].nonzero()[0])
            torch.testing.assert_close(delta[1, first], deep[k][1, 0], atol=1e-5, rtol=1e-5)
        else:
            assert torch.all(delta == 0), f"layer {k} is not a DeepStack layer"
    assert all(len(layer._forward_hooks) == 0 for layer in layers)  # prefill-only hooks are gone


def test_decode_steps_inject_nothing(tiny: MossAudioModel) -> None:
    mel = torch.randn(1, 128, 64)
    with torch.inference_mode():
        audio, deep, lens = tiny.encode_audio(mel, torch.tensor([64]))
        ids, mask, amask = _two_rows(tiny, [int(lens[0])] * 2)
        rows = torch.tensor([0, 0])
        seen = []
        hook = tiny.language_model.layers[0].register_forward_hook(
            lambda m, a, o: seen.append((o.shape[1], len(m._forward_hooks)))
        )
        try:
            out = tiny.generate_greedy(
                ids,
                mask,
                pack_rows(audio, lens, rows),
                [pack_rows(d, lens, rows) for d in deep],
                amask,
                max_new_tokens=4,
                stop_ids=[-1],
                pad_id=0,
            )
        finally:
            hook.remove()
    assert out.shape == (2, 4)
    # the padded row 0 generates what it generates alone, without padding
    keep = mask[0].bool()
    with torch.inference_mode():
        alone = tiny.generate_greedy(
            ids[:1, keep],
            mask[:1, keep],
            pack_rows(audio, lens, rows[:1]),
            [pack_rows(d, lens, rows[:1]) for d in deep],
            amask[:1, keep],
            max_new_tokens=4,
            stop_ids=[-1],
            pad_id=0,
        )
    assert torch.equal(out[0], alone[0])
    # prefill ran with the injection hook present; the 3 decode steps with ours alone
    assert seen[0] == (ids.shape[1], 2) and all(s == (1, 1) for s in seen[1:]) and len(seen) == 4


def test_audio_count_mismatch_is_refused(tiny: MossAudioModel) -> None:
    ids, mask, amask = _two_rows(tiny, [3, 5])
    with pytest.raises(ValueError, match="8 audio positions but 7"):
        tiny(ids, attention_mask=mask, audio_embeds=torch.zeros(7, 64), audio_input_mask=amask)


def test_decode_step_mask_equals_the_transformers_mask(tiny: MossAudioModel) -> None:
    from transformers.cache_utils import DynamicCache
    from transformers.masking_utils import create_causal_mask

    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :4] = 0
    mask[2, :1] = 0
    cache = DynamicCache()
    kv = torch.zeros(3, 2, 11, 16)
    cache.update(kv, kv, 0)
    ref = create_causal_mask(
        config=tiny.language_model.config,
        input_embeds=torch.zeros(3, 1, 64),
        attention_mask=mask,
        cache_position=torch.tensor([11]),
        past_key_values=cache,
        position_ids=None,
    )
    assert tiny.language_model.config._attn_implementation == "sdpa"
    assert torch.equal(tiny.decode_step_mask(mask)["full_attention"], ref)


def _reference_chunked(enc, mel: torch.Tensor) -> torch.Tensor:
    """The upstream encoder's chunked pass, written out for one clip [128, T]: chunks of
    2 × n_window frames, each zero-padded to the clip's longest chunk, the three convs run over
    the padding, positions from 0 and attention over the chunk's real tokens, chunks' tokens
    concatenated (OpenMOSS/MOSS-Audio d7a7519 "Add chunk infer"; vLLM's moss_audio.py)."""
    import torch.nn.functional as F

    size = 2 * enc.cfg.n_window
    chunks = list(mel.split(size, dim=1))
    width = max(c.shape[1] for c in chunks)
    outs = []
    for c in chunks:
        x = F.pad(c, (0, width - c.shape[1]))[None, None]
        for conv in (enc.conv1, enc.conv2, enc.conv3):
            x = F.gelu(conv(x))
        n = downsampled_length(c.shape[1])
        x = enc.stem_proj(x.permute(0, 3, 1, 2).flatten(2))[:, :n]
        x = x + enc.positions(n, x.device)
        keep = torch.ones(1, 1, 1, n, dtype=torch.bool)
        for layer in enc.layers:
            x = layer(x, keep)
        outs.append(enc.out_proj(enc.layer_norm(x))[0])
    return torch.cat(outs)


def test_the_encoder_attends_within_4_s_chunks_as_upstream_and_stays_batch_invariant():
    from earmark.models.moss_config import MossAudioEncoderConfig
    from earmark.models.moss_encoder import MossAudioEncoder

    torch.manual_seed(0)
    cfg = MossAudioEncoderConfig(
        d_model=64, output_dim=48, encoder_layers=2, encoder_attention_heads=4,
        encoder_ffn_dim=96, downsample_hidden_size=16, deepstack_encoder_layer_indexes=[0],
    )  # fmt: skip
    assert cfg.n_window == 200  # the release's value: 400 mel frames, 4 s
    enc = MossAudioEncoder(cfg).eval()
    frames = [300, 400, 450, 600, 1000, 3000]  # 3 s to 30 s: one chunk, exactly one, several
    mels = [torch.randn(128, f) for f in frames]
    batch = torch.zeros(len(frames), 128, max(frames))
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    with torch.no_grad():
        out, deep, lens = enc(batch, torch.tensor(frames))
        for i, m in enumerate(mels):
            n = downsampled_length(frames[i])
            assert int(lens[i]) == n  # chunking keeps 12.5 tokens/s
            want = _reference_chunked(enc, m)
            torch.testing.assert_close(out[i, :n], want, atol=2e-5, rtol=1e-4)
            alone, _, _ = enc(m[None], torch.tensor([frames[i]]))
            torch.testing.assert_close(
                alone[0, :n], out[i, :n], atol=1e-5, rtol=1e-5
            )  # batched == alone
        # beyond 4 s, attending over the whole window is a different encoder
        cfg.n_window = None
        whole, _, _ = enc(batch, torch.tensor(frames))
    assert torch.allclose(whole[0, :38], out[0, :38], atol=1e-5)  # one chunk: the same
    assert not torch.allclose(whole[3, :75], out[3, :75], atol=1e-2)  # 6 s: not
