"""`model.engine: vllm` (issue #17): the vLLM backend behind earmark's AudioModel interface.

For MOSS and MiDashengLM: the rows' texts, log-probabilities and truncation equal the
transformers path's for every task, for windows of very different lengths alone and batched;
each window is encoded once whatever the number of tasks; concurrent calls share the engine;
failures are named. vLLM runs in its own environment (`make vllm-env`, which `make test`
builds); the tiny checkpoints are ones vLLM's own implementations load.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from earmark.audio.windows import Window
from earmark.contracts import TaskRequest
from earmark.models.base import ModelLoadError
from earmark.models.registry import model_class
from earmark.models.vllm_engine import vllm_python
from earmark.testing.tiny import build_tiny_checkpoint
from earmark.testing.tiny_moss import build_tiny_moss

pytestmark = pytest.mark.slow
# moss: one token; one 4-s chunk (batched with longer clips vLLM pads it); two; three; five.
# midashenglm: padded to one token; 6 s ends where a batched front end reads the zero padding
# (n % 640 <= 95); 20 s spans two 10-s encoder splits
DURATIONS_S = (0.025, 1.5, 4.5, 6.0, 9.0, 20.0)
TASKS = [
    TaskRequest(name="asr"),
    TaskRequest(name="caption"),
    TaskRequest(name="tags"),
    TaskRequest(name="mood", prompt="What is the mood?"),
]
MAX_TOKENS = 6
LOGPROB_ATOL = 1e-3  # float32 on both sides; measured differences are ~2e-5


def build(family: str, folder: Path) -> Path:
    if family == "moss":  # a large init spread: random weights give distinct tokens per audio
        return build_tiny_moss(folder, vllm_ready=True, init_std=0.5)
    return build_tiny_checkpoint(family, folder)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    vllm_python()  # fails naming `make vllm-env` (which make test runs) when vLLM is missing
    return build("moss", tmp_path_factory.mktemp("moss"))


@pytest.fixture(scope="module", params=["moss", "midashenglm"])
def engines(request, tmp_path_factory):
    family = request.param
    path = str(build(family, tmp_path_factory.mktemp(family)))
    v = model_class(family, "vllm")(path, device="cpu", max_new_tokens=MAX_TOKENS)
    yield v, model_class(family)(path, device="cpu", max_new_tokens=MAX_TOKENS)
    v.close()


def clips(seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(d * 16_000))).astype(np.float32) for d in DURATIONS_S]


def windows(model_cls, xs: list[np.ndarray]) -> list[Window]:
    return [
        Window("a", i, 0.0, len(x) / 16_000, len(x), model_cls.prepare(x)) for i, x in enumerate(xs)
    ]


def assert_same(ours, theirs, where: str) -> None:
    for name, a in ours.items():
        b = theirs[name]
        assert a.text == b.text, f"{where} {name}: {a.text!r} != {b.text!r}"
        assert a.truncated == b.truncated, f"{where} {name}"
        assert a.avg_logprob == pytest.approx(b.avg_logprob, abs=LOGPROB_ATOL), f"{where} {name}"


def test_every_task_equals_the_transformers_path_alone_and_batched(engines):
    v, hf = engines
    xs = clips()
    ref = hf.annotate(windows(type(hf), xs), TASKS)
    before = v.proc.stats()["max_encoder_batch"]
    batched = v.annotate(windows(type(v), xs), TASKS)  # first: nothing cached yet
    # the windows vLLM encodes alike in any batch were encoded together; the others alone
    assert before == 0 and v.proc.stats()["max_encoder_batch"] >= 2
    alone = [v.annotate(windows(type(v), [x]), TASKS)[0] for x in xs]
    for i, d in enumerate(DURATIONS_S):
        assert_same(batched[i], ref[i], f"{d} s batched")
        assert_same(alone[i], ref[i], f"{d} s alone")
    texts = {r[t.name].text for r in ref for t in TASKS}
    assert len(texts) > len(DURATIONS_S)  # the audio and the task change the output
    assert "batch-invariant" in v.name and "vllm" in v.name  # the row's `model` says so


def test_each_window_is_encoded_once_for_all_its_tasks(engines):
    v, _ = engines
    xs = clips(seed=2)  # audio the engine has not seen: nothing cached
    before = v.proc.stats()
    cached0 = v.cached_tokens
    v.annotate(windows(type(v), xs), TASKS)
    after = v.proc.stats()
    assert after["encoder_items"] - before["encoder_items"] == len(xs)  # not len(xs) × 4
    assert after["prompts"] - before["prompts"] == len(xs) * len(TASKS)
    first_cached = v.cached_tokens - cached0
    # asking again: the encoder is not run, and more of the prompts come from the prefix cache
    # (only whole KV blocks are cached: 128 tokens on CPU, so a short window's prompt is not)
    cached1 = v.cached_tokens
    v.annotate(windows(type(v), xs), TASKS)
    again = v.proc.stats()
    assert again["encoder_items"] == after["encoder_items"]
    assert v.cached_tokens - cached1 > first_cached


def test_concurrent_calls_share_the_running_batch(engines):
    v, _ = engines
    xs = clips(seed=3)
    expected = [v.annotate(windows(type(v), [x]), TASKS[:2])[0] for x in xs]
    got: dict[int, dict] = {}
    start = threading.Barrier(len(xs))

    def call(i: int) -> None:
        start.wait()
        got[i] = v.annotate(windows(type(v), [xs[i]]), TASKS[:2])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for i in range(len(xs)):
        assert_same(got[i], expected[i], f"call {i}")
    # more rows were in the engine at once than any single call (2 tasks) holds
    assert v.proc.stats()["max_in_flight"] > len(TASKS[:2])


def test_a_missing_vllm_is_named_with_the_fix(ckpt, monkeypatch):
    from earmark.models.vllm_models import VllmMossModel

    monkeypatch.setenv("EARMARK_VLLM_PYTHON", "/nonexistent/python")
    with pytest.raises(ModelLoadError, match="EARMARK_VLLM_PYTHON=/nonexistent/python"):
        VllmMossModel.preflight(str(ckpt))


def test_bad_engine_options_are_refused_before_a_job_starts(tmp_path, monkeypatch):
    from earmark.models.vllm_models import VllmMiDashengLMModel

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("EARMARK_VLLM_OPTIONS", "{gpu_memory_utilization: 0.8")
    with pytest.raises(ModelLoadError, match="EARMARK_VLLM_OPTIONS is not JSON"):
        VllmMiDashengLMModel.preflight(str(tmp_path))
    monkeypatch.setenv("EARMARK_VLLM_OPTIONS", "[1, 2]")
    with pytest.raises(ModelLoadError, match="must be a JSON object"):
        VllmMiDashengLMModel.preflight(str(tmp_path))


def test_an_engine_that_cannot_start_says_why(ckpt, tmp_path):
    from earmark.models.vllm_engine import VllmProcess

    with pytest.raises(ModelLoadError, match="did not start") as err:
        VllmProcess({"model": str(tmp_path / "no-such-checkpoint"), "max_model_len": 64})
    assert "no-such-checkpoint" in str(err.value)


def test_an_engine_that_dies_is_a_machine_failure_not_an_input_error(ckpt):
    from earmark.annotate.failures import FailureKind, classify
    from earmark.models.vllm_models import VllmMossModel

    v = VllmMossModel(str(ckpt), device="cpu", max_new_tokens=2)
    v.proc.proc.kill()
    v.proc.proc.wait()
    with pytest.raises(RuntimeError, match="vLLM engine process") as err:
        v.annotate(windows(VllmMossModel, clips()[:1]), TASKS[:1])
    assert classify(err.value) == FailureKind.FATAL  # never an error row: the actor restarts
    v.close()
