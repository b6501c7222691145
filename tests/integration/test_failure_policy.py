"""The failure policy on a real local Ray: a failing device or a crashing process never
poisons, loses or hangs a job (earmark.annotate.failures, the `faulty` model family).

The model is `earmark.testing.faulty.FaultyModel`, an AudioModel that fails on purpose as
devices and kernels do (a CUDA-style error, a process exit, a real SIGSEGV); everything else is
the production path: listing, decoding, the Annotator actor pool, Ray's restarts and retries,
the attempt ledger and the shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earmark.batch.runner import run_job
from earmark.contracts import JobError, JobSpec
from earmark.sink.shards import read_output
from earmark.testing.faulty import calls, loads, write_plan

pytestmark = pytest.mark.usefixtures("ray_session")
FAULTY = "earmark.testing.faulty.FaultyModel"
RATE = 16_000
POISON = 23_456  # samples of the one file the model crashes on (no other clip has it)
DEVICE_ERROR = "CUDA error: an illegal memory access was encountered"


def tones(d: Path, n: int, poison: int | None = None) -> Path:
    """n tone clips at 16 kHz; clip i has 16000 + 1000 i samples (`poison`: POISON samples)."""
    d.mkdir(parents=True)
    for i in range(n):
        samples = POISON if i == poison else RATE + 1000 * i
        t = np.arange(samples) / RATE
        sf.write(d / f"tone{i:02d}.wav", 0.3 * np.sin(2 * np.pi * (220 + 20 * i) * t), RATE)
    return d


def job(src: Path, out: Path, ckpt: str, **kw) -> JobSpec:
    return JobSpec(
        source=str(src),
        output=str(out),
        # tones hold no speech: min_speech_s 0 sends them to the model all the same
        model={"family": FAULTY, "checkpoint": ckpt, "batch_size": 4, "min_speech_s": 0},
        resources={"files_per_batch": 4},
        **kw,
    )


def rows_by_name(out: Path) -> dict[str, dict]:
    return {Path(r["uri"]).name: r for r in read_output(str(out)).to_pylist()}


def test_a_device_error_restarts_the_actor_and_writes_no_error_row(tmp_path):
    ckpt = write_plan(tmp_path / "ckpt", on_call=2, mode="device_error")
    src, out = tones(tmp_path / "src", 12), tmp_path / "out"
    summary = run_job(job(src, out, ckpt), progress=False)
    rows = rows_by_name(out)
    assert len(rows) == 12 and all(r["status"] == "ok" for r in rows.values())
    assert summary.files_ok == 12 and summary.files_error == 0
    assert summary.fatal_failures == 1 and summary.annotator_restarts == 1
    assert len(loads(ckpt)) == 2  # the model was loaded again in the restarted process
    assert summary.output_rows == 12 and summary.duplicates_removed == 0


@pytest.mark.parametrize("mode", ["segfault", "exit"])
def test_a_file_that_crashes_the_process_is_quarantined_alone(tmp_path, mode):
    ckpt = write_plan(tmp_path / "ckpt", on_samples=POISON, mode=mode)
    src, out = tones(tmp_path / "src", 8, poison=5), tmp_path / "out"
    summary = run_job(job(src, out, ckpt), progress=False)
    rows = rows_by_name(out)
    assert len(rows) == 8
    bad = rows.pop("tone05.wav")
    assert (bad["status"], bad["error_stage"], bad["error_kind"]) == (
        "error",
        "infer",
        "model_crash",
    )
    assert "3 attempts" in bad["error"] and "worker process died" in bad["error"]
    assert all(r["status"] == "ok" for r in rows.values())
    assert summary.files_quarantined == 1 and summary.errors_by_kind == {"infer/model_crash": 1}
    # three attempts of the culprit: with its block, then alone twice; then no more calls
    assert sum(str(POISON) in c for c in calls(ckpt)) == 3


def test_a_model_failing_on_everything_stops_the_job_with_the_cause(tmp_path):
    ckpt = write_plan(tmp_path / "ckpt", always=True, mode="device_error")
    src, out = tones(tmp_path / "src", 12), tmp_path / "out"
    spec = job(src, out, ckpt, failures={"max_consecutive_fatal": 3})
    with pytest.raises(JobError, match="3 times in a row") as err:
        run_job(spec, progress=False)
    assert DEVICE_ERROR in str(err.value)
    assert read_output(str(out)).num_rows == 0  # no error rows for files never annotated
    assert len(calls(ckpt)) <= 4  # bounded: the streak limit, plus a call in flight


def test_retry_errors_replaces_each_error_row_exactly_once(tmp_path):
    ckpt = write_plan(tmp_path / "ckpt", on_samples=POISON, mode="exit")
    src, out = tones(tmp_path / "src", 6, poison=2), tmp_path / "out"
    (src / "broken.wav").write_bytes(b"RIFF" + bytes(40))  # a decode error row
    first = run_job(job(src, out, ckpt), progress=False)
    assert first.files_quarantined == 1 and first.files_error == 2
    old = rows_by_name(out)["tone02.wav"]
    write_plan(tmp_path / "ckpt")  # the model is fixed (a new driver, say)
    plain = run_job(job(src, out, ckpt), progress=False)  # a plain rerun skips error rows
    assert plain.files_done_before == 7 and plain.errors_retried == 0
    again = run_job(job(src, out, ckpt), progress=False, retry_errors=frozenset({"model_crash"}))
    assert again.errors_retried == 1 and again.errors_now_ok == 1
    assert again.files_done_before == 6 and again.output_rows == 7
    rows = read_output(str(out)).to_pylist()
    assert len(rows) == 7 == len({r["audio_id"] for r in rows})
    new = next(r for r in rows if r["uri"].endswith("tone02.wav"))
    assert new["status"] == "ok" and new["audio_id"] == old["audio_id"]
    assert new["created_at"] > old["created_at"]
    every = run_job(job(src, out, ckpt), progress=False, retry_errors=frozenset())
    assert every.errors_retried == 1 and every.errors_now_ok == 0  # broken.wav stays broken
    assert every.output_rows == 7 and every.duplicates_removed == 0
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["errors_retried"] == 1 and summary["errors_now_ok"] == 0
