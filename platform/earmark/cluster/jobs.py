"""Run earmark jobs on a Ray cluster through the Ray Jobs API (`JobSubmissionClient`).

The spec is validated here, on the client, and travels to the cluster as JSON in the job's
environment; the cluster side (`-m earmark.cluster.jobmain`, run by the interpreter Ray runs
under) runs exactly that spec (`earmark.cluster.run`). The package reaches the cluster as a
`py_modules` upload (plus the repo as the `working_dir` when run from a checkout, so relative
sources such as `data/demo/...` resolve), or is already installed in the image named by
`--image`.

Idempotence: the submission id is derived from the spec's job id (itself a hash of source, output,
model and tasks), so submitting the same spec and output twice returns the job already running or
finished instead of starting a second one. A failed or stopped attempt is retried under a new id
with an `-rN` suffix; the job resumes from the rows already written.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earmark.contracts import JobError, JobSpec

SUBMISSION_PREFIX = "earmark-"
SPEC_ENV = "EARMARK_JOB_SPEC"  # the validated spec, as JSON, in the job's environment
# Ray runs the entrypoint with `sh -c` on the head, with the head's PATH: its `python` need not
# be the interpreter Ray runs under (a venv's `ray start` run without activating the venv), and
# then earmark's imports fail. The entrypoint therefore runs the interpreter named by
# EARMARK_PYTHON if set, else Ray's own: the job supervisor (the shell's parent) has Ray's
# _raylet.so mapped from PREFIX/lib/pythonX.Y/site-packages, so PREFIX/bin/python is the one
# (a venv, conda or /usr/local install; Linux, where /proc exists). Else PATH's python.
# earmark.jobmain names a missing module with the interpreter, how it was chosen and the node.
ENTRYPOINT = (
    'py="$EARMARK_PYTHON"; how=env; '
    'if [ -z "$py" ]; then how=ray; '
    "lib=$(grep -m1 -o '/[^ ]*/site-packages/ray/_raylet[.]so' /proc/$PPID/maps 2>/dev/null); "
    '[ -n "$lib" ] && py="${lib%/lib/python*/site-packages/ray/_raylet.so}/bin/python"; '
    '[ -x "$py" ] || { py=python; how=path; }; fi; '
    'EARMARK_PYTHON_FROM=$how exec "$py" -m earmark.cluster.jobmain'
)
# forwarded from the submitting shell when set; credentials are never forwarded implicitly
PASSTHROUGH_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
# earmark.compute.resources.init_ray passes env_vars to ray.init; inside a job Ray refuses a driver
# runtime_env whose keys overlap the job's unless this is set (the values agree anyway)
MERGE_ENV = {"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
# .git and .venv are left out by Ray itself (naming them again only draws a warning)
UPLOAD_EXCLUDES = [
    "/out", "/.bench", "/build", "/dist", "venv", "__pycache__", "*.pyc", ".pytest_cache",
    ".ruff_cache", "*.egg-info", "*.parquet",
]  # fmt: skip
MAX_ATTEMPTS = 100  # -r2 .. -r100: a spec that failed this often needs a person, not a retry
ACTIVE = ("PENDING", "RUNNING")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClusterError(JobError):
    """The cluster could not be reached, refused the request, or has no such job."""


@dataclass(frozen=True)
class Submission:
    submission_id: str
    job_id: str
    attempt: int
    status: str
    reused: bool  # True: an attempt already running or finished was returned, nothing submitted
    note: str


def submission_id_for(job_id: str, attempt: int = 1) -> str:
    """`earmark-<job_id>` for the first attempt, `earmark-<job_id>-rN` for attempt N."""
    base = f"{SUBMISSION_PREFIX}{job_id}"
    return base if attempt == 1 else f"{base}-r{attempt}"


def load_spec(path: str | os.PathLike[str], output: str | None = None) -> JobSpec:
    """Validate a spec file for submission; a relative local output would be lost on a cluster."""
    spec = JobSpec.from_yaml(path, output=output)
    out = spec.output
    if "://" not in out and not os.path.isabs(out):
        raise JobError(
            f"output {out!r} is a relative path: on a cluster it would be written inside the "
            "job's temporary working directory and lost. Pass --out with a URL such as "
            "s3://bucket/prefix or an absolute path on storage every node shares."
        )
    return spec


def repo_root() -> Path | None:
    """The checkout earmark runs from (pyproject.toml beside platform/), or None if installed."""
    import earmark

    root = Path(earmark.__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "earmark"' in pyproject.read_text():
        return root
    return None


def parse_env(items: list[str] | None) -> dict[str, str]:
    """`K=V` strings from --env into a dict, naming the bad one."""
    env: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise JobError(f"--env {item!r}: expected KEY=VALUE with a shell-style KEY")
        env[key] = value
    return env


def build_runtime_env(
    spec: JobSpec,
    *,
    image: str | None = None,
    upload: bool = True,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The job's runtime_env: the spec and env vars, plus the package or the image to run."""
    import earmark

    env_vars = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env_vars.update(env or {})
    env_vars.update(MERGE_ENV)
    env_vars[SPEC_ENV] = spec.model_dump_json()
    runtime_env: dict[str, Any] = {"env_vars": env_vars}
    if image:
        # Ray starts the driver and workers in this container (needs podman on the nodes)
        runtime_env["image_uri"] = image
    elif upload:
        runtime_env["py_modules"] = [str(Path(earmark.__file__).resolve().parent)]
        runtime_env["excludes"] = list(UPLOAD_EXCLUDES)
        root = repo_root()
        if root is not None:
            runtime_env["working_dir"] = str(root)
    return runtime_env


def connect(address: str | None) -> Any:
    """A JobSubmissionClient for `http://HEAD:8265` (token auth as Ray configures it)."""
    from ray.job_submission import JobSubmissionClient

    from earmark.compute.address import check_submit_address

    check_submit_address(address)
    headers = {}
    token = _explicit_token()
    if token and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        # Ray only sends its token when RAY_AUTH_MODE=token; a token given explicitly is meant
        headers["Authorization"] = f"Bearer {token}"
    try:
        return JobSubmissionClient(address, headers=headers or None)
    except Exception as exc:
        where = address or os.environ.get("RAY_ADDRESS") or "the default address"
        raise ClusterError(f"cannot reach the Ray cluster at {where}: {exc}") from exc


def _explicit_token() -> str | None:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and os.path.isfile(path):
        return Path(path).read_text().strip()
    return None


def _info(client: Any, submission_id: str) -> Any | None:
    try:
        return client.get_job_info(submission_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            return None
        raise ClusterError(str(exc)) from exc


def submit(
    spec: JobSpec,
    client: Any,
    *,
    image: str | None = None,
    upload: bool = True,
    env: dict[str, str] | None = None,
    rerun: bool = False,
) -> Submission:
    """Submit a job, or return the attempt of the same spec that is running or has succeeded."""
    job_id = spec.job_id or ""
    latest, info = 0, None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        found = _info(client, submission_id_for(job_id, attempt))
        if found is None:
            break
        latest, info = attempt, found
    if info is not None:
        status = str(info.status)
        if status in ACTIVE or (status == "SUCCEEDED" and not rerun):
            sid = submission_id_for(job_id, latest)
            note = f"job {job_id} is already {status} as {sid}; nothing submitted"
            return Submission(sid, job_id, latest, status, True, note)
        if latest >= MAX_ATTEMPTS:
            raise ClusterError(f"job {job_id} has {latest} attempts; inspect it before retrying")
    attempt = latest + 1
    sid = submission_id_for(job_id, attempt)
    metadata = {
        "earmark_job_id": job_id,
        "earmark_attempt": str(attempt),
        "source": spec.source,
        "output": spec.output,
        "model": f"{spec.model.family}:{spec.model.checkpoint or 'default'}",
        "tasks": ",".join(t.name for t in spec.tasks),
    }
    runtime_env = build_runtime_env(spec, image=image, upload=upload, env=env)
    try:
        client.submit_job(
            entrypoint=ENTRYPOINT, submission_id=sid, runtime_env=runtime_env, metadata=metadata
        )
    except RuntimeError as exc:
        raced = _info(client, sid) if "already exists" in str(exc) else None
        if raced is None:
            raise ClusterError(f"the cluster refused the job: {exc}") from exc
        note = f"job {job_id} was submitted concurrently as {sid}; nothing submitted"
        return Submission(sid, job_id, attempt, str(raced.status), True, note)
    if latest:
        note = f"attempt {latest} was {info.status}: submitted attempt {attempt} as {sid}"
    else:
        note = f"submitted job {job_id} as {sid}"
    return Submission(sid, job_id, attempt, "PENDING", False, note)


def resolve(client: Any, ref: str) -> str:
    """A submission id, or an earmark job id (`em-...`) meaning its latest attempt."""
    if _info(client, ref) is not None:
        return ref
    latest = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        sid = submission_id_for(ref, attempt)
        if _info(client, sid) is None:
            break
        latest = sid
    if latest is None:
        raise ClusterError(f"no job {ref!r} on this cluster (see `earmark jobs list`)")
    return latest


def list_jobs(client: Any, *, every: bool = False) -> list[Any]:
    """Jobs on the cluster, earmark's only unless `every`, oldest first."""
    jobs = [
        j
        for j in client.list_jobs()
        if every or (j.submission_id or "").startswith(SUBMISSION_PREFIX)
    ]
    return sorted(jobs, key=lambda j: j.start_time or 0)


def follow_logs(client: Any, submission_id: str, write: Callable[[str], Any]) -> str:
    """Stream a job's logs until it ends; returns its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            write(chunk)

    asyncio.run(tail())
    return str(client.get_job_status(submission_id))


def stop(client: Any, submission_id: str, *, wait_s: float = 30.0) -> str:
    """Ask the job to stop and wait (up to `wait_s`) until it has; returns its status."""
    import time

    client.stop_job(submission_id)
    deadline = time.monotonic() + wait_s
    status = str(client.get_job_status(submission_id))
    while status in ACTIVE and time.monotonic() < deadline:
        time.sleep(0.5)
        status = str(client.get_job_status(submission_id))
    return status
