"""The cluster side of `earmark submit`: run the job spec the submission carried.

`python -m earmark.cluster.jobmain` (the job's entrypoint) hands over to `main` once earmark's
dependencies import. The job runs on the cluster it was submitted to (`address="auto"`); its
progress lines and summary go to stdout, which Ray keeps as the job's logs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import earmark
from earmark.batch.runner import run_job
from earmark.cluster.jobs import SPEC_ENV
from earmark.contracts import JobError, JobSpec


def main() -> None:
    text = os.environ.get(SPEC_ENV)
    if not text:
        sys.exit(f"{SPEC_ENV} is not set: this module runs inside a job from `earmark submit`")
    spec = JobSpec.model_validate_json(text)
    # where the package was imported from tells an uploaded copy from an installed one
    print(f"earmark {earmark.__version__} from {Path(earmark.__file__).parent}", flush=True)
    print(f"earmark job {spec.job_id}: {spec.source} -> {spec.output}", flush=True)
    try:
        summary = run_job(spec, address="auto", progress=True)
    except JobError as exc:
        sys.exit(f"error: {exc}")
    for label, value in summary.table_rows():
        print(f"{label}: {value}", flush=True)
