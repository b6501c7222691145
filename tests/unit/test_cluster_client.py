"""earmark.cluster without a cluster: submission ids, idempotence, runtime env, spec checks.

A fake stands in for `JobSubmissionClient` with the same methods and the same errors (the SDK
raises RuntimeError carrying the HTTP status); the real client is exercised against a real Ray
head in tests/integration/test_cluster.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import earmark
from earmark.cluster import jobs as cluster
from earmark.contracts import JobError, JobSpec
from paths import REPO


class FakeInfo:
    def __init__(self, sid: str, status: str, metadata: dict, start: int) -> None:
        self.submission_id, self.status, self.metadata = sid, status, metadata
        self.start_time, self.job_id, self.entrypoint = start, None, cluster.ENTRYPOINT


class FakeClient:
    def __init__(self) -> None:
        self.jobs: dict[str, FakeInfo] = {}
        self.submitted: list[dict] = []
        self.race = False  # another client submits the same id first

    def get_job_info(self, sid: str) -> FakeInfo:
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        return self.jobs[sid]

    def submit_job(self, *, entrypoint, submission_id, runtime_env, metadata) -> str:
        if self.race:
            self.jobs[submission_id] = FakeInfo(submission_id, "RUNNING", metadata, 0)
        if submission_id in self.jobs:
            raise RuntimeError(
                f"Request failed with status code 400: Job with submission_id {submission_id} "
                "already exists. Please use a different submission_id."
            )
        self.submitted.append(dict(entrypoint=entrypoint, submission_id=submission_id,
                                   runtime_env=runtime_env, metadata=metadata))  # fmt: skip
        self.jobs[submission_id] = FakeInfo(submission_id, "PENDING", metadata, len(self.jobs))
        return submission_id

    def list_jobs(self) -> list[FakeInfo]:
        return list(self.jobs.values())

    def set(self, sid: str, status: str) -> None:
        self.jobs[sid].status = status


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    return JobSpec(source="data/demo/manifest.jsonl", output=str(tmp_path / "out"),
                   model={"family": "whisper", "checkpoint": "tiny.en"})  # fmt: skip


def test_first_submission_uses_the_job_id(spec):
    client = FakeClient()
    sub = cluster.submit(spec, client)
    assert sub.submission_id == f"earmark-{spec.job_id}" and not sub.reused
    (call,) = client.submitted
    assert call["entrypoint"] == cluster.ENTRYPOINT
    assert call["entrypoint"].endswith('exec "$py" -m earmark.cluster.jobmain')
    assert call["metadata"]["earmark_job_id"] == spec.job_id
    assert call["metadata"]["output"] == spec.output


@pytest.mark.parametrize("status", ["PENDING", "RUNNING", "SUCCEEDED"])
def test_resubmitting_returns_the_live_or_finished_job(spec, status):
    client = FakeClient()
    first = cluster.submit(spec, client)
    client.set(first.submission_id, status)
    again = cluster.submit(spec, client)
    assert again.reused and again.submission_id == first.submission_id
    assert again.status == status and status in again.note
    assert len(client.submitted) == 1


@pytest.mark.parametrize("status", ["FAILED", "STOPPED"])
def test_failed_or_stopped_attempt_is_retried_under_a_suffixed_id(spec, status):
    client = FakeClient()
    first = cluster.submit(spec, client)
    client.set(first.submission_id, status)
    second = cluster.submit(spec, client)
    assert second.submission_id == f"{first.submission_id}-r2" and not second.reused
    assert status in second.note and "attempt 2" in second.note
    client.set(second.submission_id, "SUCCEEDED")
    third = cluster.submit(spec, client)  # the latest attempt decides, not the first
    assert third.reused and third.submission_id == second.submission_id
    assert len(client.submitted) == 2


def test_rerun_starts_a_new_attempt_after_success(spec):
    client = FakeClient()
    first = cluster.submit(spec, client)
    client.set(first.submission_id, "SUCCEEDED")
    again = cluster.submit(spec, client, rerun=True)
    assert again.submission_id == f"{first.submission_id}-r2" and not again.reused
    client.set(again.submission_id, "RUNNING")
    assert cluster.submit(spec, client, rerun=True).submission_id == again.submission_id


def test_concurrent_submission_of_the_same_id_is_reused(spec):
    client = FakeClient()
    client.race = True
    sub = cluster.submit(spec, client)
    assert sub.reused and sub.status == "RUNNING" and not client.submitted


def test_other_cluster_errors_are_reported(spec):
    class Broken(FakeClient):
        def get_job_info(self, sid):
            raise RuntimeError("Request failed with status code 500: boom")

    with pytest.raises(cluster.ClusterError, match="500"):
        cluster.submit(spec, Broken())


def test_runtime_env_carries_package_repo_spec_and_env(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-forwarded")
    env = cluster.build_runtime_env(spec, env={"FOO": "bar"})
    assert env["py_modules"] == [str(Path(earmark.__file__).resolve().parent)]
    assert env["working_dir"] == str(REPO)
    assert "/out" in env["excludes"] and "*.parquet" in env["excludes"]
    ev = env["env_vars"]
    assert ev["HF_HUB_OFFLINE"] == "1" and ev["FOO"] == "bar"
    assert ev["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    assert "AWS_SECRET_ACCESS_KEY" not in ev
    assert JobSpec.model_validate_json(ev[cluster.SPEC_ENV]) == spec


def test_image_and_no_upload_ship_no_code(spec):
    env = cluster.build_runtime_env(spec, image="earmark:0.1.0")
    assert env["image_uri"] == "earmark:0.1.0"
    assert "py_modules" not in env and "working_dir" not in env
    env = cluster.build_runtime_env(spec, upload=False)
    assert set(env) == {"env_vars"}


def test_relative_output_is_refused_but_urls_and_absolute_paths_pass(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("source: data/demo/manifest.jsonl\noutput: out/demo\n")
    with pytest.raises(JobError, match="relative path.*--out"):
        cluster.load_spec(path)
    assert cluster.load_spec(path, output="s3://bucket/x").output == "s3://bucket/x"
    absolute = cluster.load_spec(path, output=str(tmp_path / "o"))
    assert absolute.job_id == JobSpec.from_yaml(path, output=str(tmp_path / "o")).job_id


def test_parse_env():
    assert cluster.parse_env(["A=1", "B_2=x=y", "C="]) == {"A": "1", "B_2": "x=y", "C": ""}
    for bad in ("NOEQUALS", "1A=x", "A-B=x"):
        with pytest.raises(JobError, match="KEY=VALUE"):
            cluster.parse_env([bad])


def test_resolve_takes_a_submission_id_or_a_job_id(spec):
    client = FakeClient()
    first = cluster.submit(spec, client)
    client.set(first.submission_id, "FAILED")
    second = cluster.submit(spec, client)
    assert cluster.resolve(client, first.submission_id) == first.submission_id
    assert cluster.resolve(client, spec.job_id) == second.submission_id
    with pytest.raises(cluster.ClusterError, match="no job"):
        cluster.resolve(client, "em-000000000000")


def test_list_shows_earmark_jobs_unless_all(spec):
    client = FakeClient()
    cluster.submit(spec, client)
    client.jobs["raysubmit_x"] = FakeInfo("raysubmit_x", "SUCCEEDED", {}, 99)
    assert [j.submission_id for j in cluster.list_jobs(client)] == [f"earmark-{spec.job_id}"]
    assert len(cluster.list_jobs(client, every=True)) == 2


def test_cluster_entry_runs_the_spec_from_the_environment(spec, monkeypatch, capsys):
    from earmark.batch.summary import JobSummary
    from earmark.cluster import run

    seen = {}

    def fake_run_job(job, *, address, progress):
        seen.update(spec=job, address=address)
        return JobSummary(job_id=job.job_id, files_listed=3, files_done_before=0, files_ok=3)

    monkeypatch.setattr(run, "run_job", fake_run_job)
    monkeypatch.setenv(cluster.SPEC_ENV, spec.model_dump_json())
    run.main()
    assert seen["address"] == "auto"  # the cluster the job was submitted to
    assert seen["spec"] == spec and seen["spec"].job_id == spec.job_id
    assert "ok / error: 3 / 0" in capsys.readouterr().out  # the summary, in the job's log


def test_cluster_entry_without_a_spec_exits(monkeypatch):
    from earmark.cluster import run

    monkeypatch.delenv(cluster.SPEC_ENV, raising=False)
    with pytest.raises(SystemExit, match=cluster.SPEC_ENV):
        run.main()


def test_a_failed_job_says_why_without_a_traceback(spec, monkeypatch):
    from earmark.cluster import run

    def fail(job, **_):
        raise JobError("the output s3://out is not writable")

    monkeypatch.setattr(run, "run_job", fail)
    monkeypatch.setenv(cluster.SPEC_ENV, spec.model_dump_json())
    with pytest.raises(SystemExit, match="error: the output s3://out is not writable"):
        run.main()


def test_explicit_token_is_sent_when_ray_would_not(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert cluster._explicit_token() == "secret-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert cluster._explicit_token() == "from-env"
