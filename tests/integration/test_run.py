"""`earmark run` on a real local Ray: annotation, resume, faults, S3 in and out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import jiwer
import pandas as pd
import pytest

from earmark.batch.runner import run_job
from earmark.compute.resources import ClusterSize, check_plan
from earmark.contracts import JobError, JobSpec, ResourceSpec
from earmark.sink.shards import read_output
from earmark.storage import Location
from paths import DEMO, REPO
from servers import S3_READER, upload_demo

pytestmark = pytest.mark.usefixtures("ray_session")
WHISPER = {"family": "whisper", "checkpoint": "tiny.en", "batch_size": 8}
SPEECH = sorted(p for p in DEMO.iterdir() if p.name.startswith("s"))
REFS = {
    json.loads(x)["uri"]: json.loads(x)["text"]
    for x in (DEMO / "manifest.jsonl").read_text().splitlines()
}


def job(source, out, **kw) -> JobSpec:
    kw.setdefault("model", WHISPER)
    kw.setdefault("resources", {"files_per_batch": 4})
    return JobSpec(source=str(source), output=str(out), **kw)


def corpus(d: Path, copies: int, corrupt: int = 0) -> Path:
    """`copies` copies of the demo speech clips plus `corrupt` broken files."""
    d.mkdir(parents=True)
    n = 0
    while n < copies:
        for p in SPEECH:
            if n == copies:
                break
            shutil.copy(p, d / f"c{n:03d}_{p.name}")
            n += 1
    for i in range(corrupt):
        (d / f"broken{i}.mp3").write_bytes(os.urandom(4000))
    return d


def norm(t: str) -> str:
    return jiwer.RemovePunctuation()(t.lower()).strip()


def test_run_demo_whisper_real_transcripts(tmp_path):
    summary = run_job(job(DEMO / "manifest.jsonl", tmp_path / "out"), progress=False)
    assert summary.files_ok == 14 and summary.files_error == 0
    assert summary.padding_fraction is not None and summary.infer_realtime_factor > 0
    df = pd.read_parquet(tmp_path / "out")  # pandas reads the folder as is
    assert len(df) == 14 and df.audio_id.is_unique
    refs, hyps = [], []
    for _, r in df.iterrows():
        text = dict(r["meta"])["text"]
        if text:
            refs.append(norm(text))
            hyps.append(norm(r["transcript"]))
            assert r["segments"][0]["transcript"] == r["transcript"]
        assert pd.isna(r["caption"]) and r["tags"] is None  # not requested → null
        assert r["model"].startswith("whisper:")
    assert jiwer.wer(refs, hyps) < 0.1
    n = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/out/*.parquet')").fetchall()[0][
        0
    ]
    assert n == 14


def test_run_eureka_stand_in_all_tasks(tmp_path):
    from earmark.testing.tiny import build_tiny_checkpoint

    ckpt = build_tiny_checkpoint("eureka", tmp_path / "eureka")
    spec = job(
        DEMO,
        tmp_path / "out",
        model={"family": "eureka", "checkpoint": str(ckpt), "max_new_tokens": 6},
        tasks='asr,caption,tags,mood="What is the mood?"',
    )
    summary = run_job(spec, progress=False)
    assert summary.files_ok == 14, summary.errors_by_kind
    rows = read_output(str(tmp_path / "out")).to_pylist()
    for r in rows:
        assert isinstance(r["transcript"], str) and isinstance(r["caption"], str)
        assert isinstance(r["tags"], list) and r["tags_raw"] is not None
        assert [a["name"] for a in r["answers"]] == ["mood"]


def test_rerun_resumes_and_never_duplicates(tmp_path):
    src = corpus(tmp_path / "src", 6)
    first = run_job(job(src, tmp_path / "out"), progress=False)
    assert first.files_ok == 6
    for p in list(src.iterdir())[:0]:
        p.unlink()
    shutil.copy(SPEECH[0], src / "new_file.wav")
    second = run_job(job(src, tmp_path / "out"), progress=False)
    assert second.files_done_before == 6 and second.files_ok == 1
    ids = read_output(str(tmp_path / "out"), columns=["audio_id"]).column("audio_id").to_pylist()
    assert len(ids) == 7 == len(set(ids))


def test_changed_file_gets_a_new_row_that_replaces_the_old(tmp_path):
    """One row per file: a file rewritten since its row was made is annotated again, and its
    old row goes once the new one is written."""
    src = corpus(tmp_path / "src", 3)
    first = run_job(job(src, tmp_path / "out"), progress=False)
    assert first.files_ok == 3 and first.output_rows == 3
    changed = sorted(src.iterdir())[0]
    shutil.copy(SPEECH[1], changed)  # new content under the same name
    again = run_job(job(src, tmp_path / "out"), progress=False)
    assert again.files_done_before == 2 and again.files_ok == 1
    assert again.rows_superseded == 1 and again.duplicates_removed == 0
    assert again.output_rows == 3 and again.output_ok == 3  # the output's totals, not the run's
    rows = read_output(str(tmp_path / "out")).to_pylist()
    assert sorted(r["uri"] for r in rows) == sorted(f"file://{p}" for p in src.iterdir())
    new = next(r for r in rows if r["uri"].endswith(changed.name))
    assert norm(new["transcript"]) == norm(REFS[SPEECH[1].name])
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["output_rows"] == 3 and summary["rows_superseded"] == 1


def test_output_of_a_scan_is_not_resumed_by_a_run(tmp_path):
    src = corpus(tmp_path / "src", 2)
    run_job(JobSpec(source=str(src), output=str(tmp_path / "out")), with_model=False,
            progress=False)  # fmt: skip
    with pytest.raises(JobError, match="holds rows of another job \\(a scan\\)"):
        run_job(job(src, tmp_path / "out"), progress=False)
    rows = read_output(str(tmp_path / "out")).to_pylist()
    assert len(rows) == 2 and all(r["model"] is None for r in rows)  # untouched


def test_ten_percent_corrupt_gives_ninety_percent_ok(tmp_path):
    src = corpus(tmp_path / "src", 18, corrupt=2)
    summary = run_job(job(src, tmp_path / "out"), progress=False)
    rows = read_output(str(tmp_path / "out")).to_pylist()
    assert len(rows) == 20
    assert sum(r["status"] == "ok" for r in rows) == 18 == summary.files_ok
    bad = [r for r in rows if r["status"] == "error"]
    assert {Path(r["uri"]).name for r in bad} == {"broken0.mp3", "broken1.mp3"}
    assert all(r["error_stage"] == "decode" for r in bad)


def test_unloadable_model_stops_before_decoding(tmp_path):
    spec = job(DEMO, tmp_path / "out", model={"family": "whisper", "checkpoint": "/no/such/dir"})
    with pytest.raises(JobError, match="model cannot be loaded.*/no/such/dir"):
        run_job(spec, progress=False)
    assert not list((tmp_path / "out").glob("part-*"))
    spec = job(DEMO, tmp_path / "o2", model=WHISPER, tasks="asr,caption")
    with pytest.raises(JobError, match="cannot do task 'caption'"):
        run_job(spec, progress=False)


def test_impossible_plan_is_refused_with_the_fix():
    with pytest.raises(JobError, match="would never run and the job would hang"):
        check_plan(ResourceSpec(annotator_num_cpus=2, min_actors=1), ClusterSize(2, 0))
    with pytest.raises(JobError, match="lower resources.max_actors to 1"):
        check_plan(ResourceSpec(annotator_num_cpus=1, max_actors=2), ClusterSize(2, 0))
    with pytest.raises(JobError, match="GPU"):
        check_plan(ResourceSpec(annotator_num_gpus=1), ClusterSize(8, 0))
    check_plan(ResourceSpec(annotator_num_cpus=1), ClusterSize(2, 0))  # the 2-core default fits


def test_annotator_worker_killed_mid_job(tmp_path, ray_session):
    """SIGKILL the process running the Annotator: the job completes, every file exactly once."""
    import psutil

    # the session's own raylet: its children are this session's workers, never another Ray's
    raylet = ray_session._private.worker._global_node.all_processes["raylet"][0].process.pid
    src = corpus(tmp_path / "src", 24)
    out = tmp_path / "out"
    result: dict = {}

    def target():
        try:
            result["summary"] = run_job(
                job(src, out, resources={"files_per_batch": 2}), progress=False
            )
        except Exception as exc:  # pragma: no cover - reported below
            result["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    killed = None
    deadline = time.time() + 180
    while time.time() < deadline and killed is None and t.is_alive():
        shards = list(out.glob("_staging/*.staged")) if out.exists() else []
        if shards:
            for proc in psutil.Process(raylet).children(recursive=True):
                try:
                    title = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if "MapBatches(Annotator)" in title:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = proc.pid
                    break
        time.sleep(0.2)
    t.join(timeout=600)
    assert killed, "no Annotator actor was found to kill"
    assert "error" not in result, result.get("error")
    ids = read_output(str(out), columns=["audio_id"]).column("audio_id").to_pylist()
    assert len(ids) == 24 == len(set(ids))
    assert result["summary"].duplicates_removed == 0  # retried batches overwrote, never doubled
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]  # no half-written shard


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session. Ray 2.60 puts each worker in its own process group,
    so killing the driver's group would leave workers that write one more shard before they
    notice the raylet is gone (the rerun then removes those duplicates, but that is a different
    test: this one is a crash of everything)."""
    for _ in range(3):  # a process may fork while the first sweep runs
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def test_driver_sigkill_then_rerun_is_exactly_once(tmp_path):
    """Kill the driver's whole session (driver + its embedded Ray) mid-run, then rerun."""
    src = corpus(tmp_path / "src", 24)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, "-m", "earmark.cli", "run", str(src), "--out", str(out),
           "--model", "whisper:tiny.en", "--tasks", "asr", "--cpus", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and list(out.glob("_staging/*.staged")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the job ended before it could be killed"
    kill_session(proc.pid)  # the machine dies: driver, raylet and every worker at once
    proc.wait()
    partial = read_output(str(out), columns=["audio_id"], staged=True).num_rows
    assert 0 < partial < 24
    summary = run_job(job(src, out), progress=False)
    assert summary.files_done_before == partial and summary.duplicates_removed == 0
    ids = read_output(str(out), columns=["audio_id"]).column("audio_id").to_pylist()
    assert len(ids) == 24 == len(set(ids))
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_run_s3_to_s3(s3_server):
    upload_demo(s3_server.admin, "audio/run", names=[p.name for p in SPEECH[:4]])
    opts = s3_server.options(S3_READER)
    summary = run_job(job("s3://audio/run", "s3://out/run1", storage_options=opts), progress=False)
    assert summary.files_ok == 4
    rows = read_output(Location("s3://out/run1", opts)).to_pylist()
    assert len(rows) == 4
    for r in rows:
        name = r["uri"].rsplit("/", 1)[1]
        assert norm(r["transcript"]) and jiwer.wer(norm(REFS[name]), norm(r["transcript"])) < 0.3
    assert s3_server.admin.exists("out/run1/_summary.json")


def test_transient_s3_read_error_is_retried(s3_server, tmp_path):
    from servers import FlakyProxy

    upload_demo(s3_server.admin, "audio/flaky", names=[p.name for p in SPEECH[:3]])
    proxy = FlakyProxy(s3_server.port, marker="/audio/flaky/")
    try:
        opts = {**s3_server.options(S3_READER), "client_kwargs": {"endpoint_url": proxy.endpoint}}
        spec = JobSpec(source="s3://audio/flaky", output=str(tmp_path / "out"),
                       storage_options=opts)  # fmt: skip
        summary = run_job(spec, with_model=False, progress=False)
    finally:
        proxy.stop()
    assert proxy.failures == 3  # every object's first read broke off mid-body
    assert summary.files_ok == 3, summary.errors_by_kind
    rows = read_output(str(tmp_path / "out")).to_pylist()
    assert all(r["status"] == "ok" and r["duration_s"] > 3 for r in rows)
