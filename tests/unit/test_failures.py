"""The failure policy without Ray: which failures are rows, how a crashing batch is narrowed
to one file, when a job stops (earmark.annotate.failures, earmark.annotate.annotator)."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
from typer.testing import CliRunner

from earmark.annotate import annotator as annotator_mod
from earmark.annotate.annotator import Annotator
from earmark.annotate.decoded import to_work_table
from earmark.annotate.failures import (
    PROCESS_DIED,
    AttemptLedger,
    FailureKind,
    FatalModelError,
    JobStopped,
    classify,
)
from earmark.audio.windows import SAMPLE_RATE, Window
from earmark.cli import app
from earmark.contracts import FailureSpec, JobSpec
from earmark.models.base import ModelInputError
from earmark.testing.faulty import calls, write_plan

DEVICE_ERROR = "CUDA error: an illegal memory access was encountered"


def test_classify_tells_input_memory_and_fatal_apart():
    assert classify(ModelInputError("window too long")) is FailureKind.INPUT
    assert classify(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")) is (
        FailureKind.OUT_OF_MEMORY
    )
    assert classify(MemoryError()) is FailureKind.OUT_OF_MEMORY
    assert classify(RuntimeError(DEVICE_ERROR)) is FailureKind.FATAL
    assert classify(IndexError("list index out of range")) is FailureKind.FATAL  # not known


def window(i: int, samples: int) -> Window:
    audio = np.full(samples, 0.1, np.float32)
    return Window(f"id{i:02d}", 0, 0.0, samples / SAMPLE_RATE, samples, {"rms": audio[:1]})


def faulty_annotator(tmp_path, batch_size=8, ledger=None, **plan) -> Annotator:
    ckpt = write_plan(tmp_path / "ckpt", **plan)
    return Annotator(
        {"family": "earmark.testing.faulty.FaultyModel", "checkpoint": ckpt,
         "batch_size": batch_size},
        [{"name": "asr"}],
        ledger=ledger,
    )  # fmt: skip


def test_a_plugin_family_is_validated_by_import_path():
    spec = JobSpec(source="/a", output="/o", model={"family": "earmark.testing.faulty.FaultyModel"})
    assert spec.model.family.endswith("FaultyModel")
    with pytest.raises(ValueError, match="cannot be imported"):
        JobSpec(source="/a", output="/o", model={"family": "earmark.nowhere.Model"})
    with pytest.raises(ValueError, match="not an AudioModel"):
        JobSpec(source="/a", output="/o", model={"family": "earmark.contracts.JobSpec"})


def test_a_device_error_is_fatal_never_a_row(tmp_path):
    ann = faulty_annotator(tmp_path, always=True, mode="device_error")
    with pytest.raises(FatalModelError, match="illegal memory access"):
        ann.annotate_windows([window(0, 16000), window(1, 8000)])


def test_an_input_error_is_narrowed_to_its_window(tmp_path):
    ann = faulty_annotator(tmp_path, on_samples=8000, mode="input")
    ws = [window(i, 16000 + i) for i in range(5)] + [window(5, 8000)]
    texts, errors, _, _ = ann.annotate_windows(ws)
    assert errors[5] and "tokenizer refused" in errors[5]
    assert all(texts[i] == {"asr": f"asr: {16000 + i} samples"} for i in range(5))


def test_out_of_memory_splits_the_batch_until_it_fits(tmp_path):
    ann = faulty_annotator(tmp_path, oom_above=2)
    ws = [window(i, 16000 + i) for i in range(8)]
    texts, errors, _, _ = ann.annotate_windows(ws)
    assert errors == [None] * 8 and all(texts)
    sizes = [line.count(",") + 1 for line in calls(tmp_path / "ckpt")]
    assert sizes[0] == 8 and max(sizes[1:]) <= 4 and sum(s for s in sizes if s <= 2) == 8


def test_out_of_memory_on_one_window_is_fatal(tmp_path):
    ann = faulty_annotator(tmp_path, oom_above=0)
    with pytest.raises(FatalModelError, match="out of memory"):
        ann.annotate_windows([window(0, 16000)])


class InProcess:
    """The ledger without Ray (the batch job reaches the same class through an actor)."""

    def __init__(self, spec: FailureSpec, what: str = "the model") -> None:
        self.ledger = AttemptLedger(spec, what)

    def __getattr__(self, name):
        return getattr(self.ledger, name)


def block(n: int, poison: int | None = None) -> pa.Table:
    rows = []
    for i in range(n):
        samples = 7777 if i == poison else 16000 + i
        row = {"audio_id": f"id{i:02d}", "uri": f"/a/{i}.wav", "status": "ok", "meta": None}
        row.update(payload=pickle.dumps([window(i, samples)]), num_windows=1)
        rows.append(row)
    return to_work_table(rows)


def test_a_block_that_failed_before_runs_file_by_file_and_quarantines_the_culprit(
    tmp_path, monkeypatch
):
    """The process exits on a fatal failure (Ray restarts it); simulate the restarts here."""
    exits = []

    class ProcessExit(BaseException):
        pass

    def exit_for_restart(error: str) -> None:
        exits.append(error)
        raise ProcessExit

    monkeypatch.setattr(annotator_mod, "_exit_for_restart", exit_for_restart)
    ledger = InProcess(FailureSpec(max_attempts=3))
    ann = faulty_annotator(tmp_path, ledger=ledger, on_samples=7777, mode="device_error")
    data = block(4, poison=2)
    for _ in range(10):  # Ray retries the block after each exit
        try:
            out = ann.annotate_block(data).to_pylist()
            break
        except ProcessExit:
            continue
    by_id = {r["audio_id"]: r for r in out}
    assert by_id["id02"]["status"] == "error" and by_id["id02"]["error_kind"] == "model_crash"
    assert "3 attempts" in by_id["id02"]["error"] and DEVICE_ERROR in by_id["id02"]["error"]
    assert [by_id[f"id0{i}"]["status"] for i in (0, 1, 3)] == ["ok"] * 3
    assert len(exits) == 3  # the whole block once, then the culprit alone twice
    assert ledger.stats()["files_quarantined"] == 1 and ledger.files == {}


def test_a_crashed_process_is_counted_when_its_files_come_back():
    ledger = AttemptLedger(FailureSpec(max_attempts=2))
    ledger.succeed(ledger.begin(["ok"]))
    ledger.begin(["a", "b"])  # the process dies here: no fail() is ever called
    assert ledger.attempts(["a", "b", "c"]) == {"a": 1, "b": 1}
    ledger.begin(["a"])  # the retry notices the attempt that never ended
    assert ledger.fatal == 1 and ledger.files["b"].last_error == PROCESS_DIED
    assert ledger.may_quarantine("a") is not None  # a's second attempt died too (2 of 2)
    assert ledger.fatal == 2


def test_a_model_failing_on_everything_stops_the_job_and_quarantines_nothing():
    ledger = AttemptLedger(FailureSpec(max_attempts=2, max_consecutive_fatal=4))
    for i in range(3):
        assert ledger.fail(ledger.begin([f"f{i}"]), DEVICE_ERROR) == ""
        assert ledger.may_quarantine(f"f{i}") is None  # nothing annotated yet: no verdict
    stop = ledger.fail(ledger.begin(["f3"]), DEVICE_ERROR)
    assert "4 times in a row" in stop and DEVICE_ERROR in stop
    with pytest.raises(JobStopped, match="in a row"):
        ledger.begin(["f4"])
    assert ledger.quarantined == 0


def test_successes_reset_the_streak_but_not_the_job_budget():
    ledger = AttemptLedger(FailureSpec(max_consecutive_fatal=2, max_fatal_failures=3))
    for i in range(2):
        ledger.fail(ledger.begin([f"x{i}"]), "boom")
        ledger.succeed(ledger.begin([f"y{i}"]))
    assert not ledger.stopped
    assert "3 times in this job" in ledger.fail(ledger.begin(["z"]), "boom")


def test_earmark_annotate_reports_a_fatal_failure_as_a_message_not_a_row(tmp_path):
    ckpt = write_plan(tmp_path / "ckpt", always=True, mode="device_error")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.full(16000, 0.1, np.float32), SAMPLE_RATE)
    model = f"earmark.testing.faulty.FaultyModel:{ckpt}"
    # a constant signal holds no speech: --min-speech-s 0 sends it to the model all the same
    r = CliRunner().invoke(app, ["annotate", str(wav), "--model", model, "--min-speech-s", "0"])
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert "the model failed while annotating" in text and "illegal memory access" in text


def test_a_file_that_keeps_crashing_its_decode_process_becomes_a_decoder_crash_row(
    tmp_path, monkeypatch
):
    """A native decoder crash takes the task's process down (Ray retries the task); the
    retries go file by file and the culprit gets its row after max_attempts."""
    from earmark.annotate import decoded as stages

    class ProcessExit(BaseException):
        pass

    real = stages.read_and_decode

    def read_and_decode(uri, *args, **kw):
        if uri.endswith("bad.wav"):
            raise ProcessExit  # what a segfault in FFmpeg looks like from here: nothing
        return real(uri, *args, **kw)

    monkeypatch.setattr(stages, "read_and_decode", read_and_decode)
    recs = []
    for name in ("a.wav", "bad.wav", "b.wav"):
        sf.write(tmp_path / name, np.full(8000, 0.1, np.float32), SAMPLE_RATE)
        recs.append({"audio_id": name, "uri": f"file://{tmp_path / name}", "size_bytes": 1})
    ledger = InProcess(FailureSpec(max_attempts=3), "the decoder")
    ledger.succeed(ledger.begin(["another file"]))  # the decoder works on other files
    stage = stages.DecodeStage({}, None, "job", None, ledger)
    crashes = 0
    while True:  # Ray retries the task after each crash
        try:
            rows = list(stage.decode_group(recs))
            break
        except ProcessExit:
            crashes += 1
            assert crashes < 10
    by_id = {r["audio_id"]: r for r in rows}
    assert (by_id["bad.wav"]["error_stage"], by_id["bad.wav"]["error_kind"]) == (
        "decode",
        "decoder_crash",
    )
    assert "the decoder failed fatally on this file in 3 attempts" in by_id["bad.wav"]["error"]
    assert by_id["a.wav"]["status"] == by_id["b.wav"]["status"] == "ok"
    assert crashes == 3 and ledger.stats()["fatal_failures"] == 3
