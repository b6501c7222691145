"""The typed contracts at earmark's boundaries, pydantic and Arrow only: the job spec and its
parts, tasks, the model families as data, the output row and its Arrow schema, errors.

Everything that crosses a boundary (YAML → job, job → Parquet, HTTP → row) is one of these,
validated at construction so that a bad value is named where it enters.
"""

from earmark.contracts.errors import EarmarkError, ErrorKind, ErrorStage, JobError
from earmark.contracts.families import FAMILIES, FamilyInfo, family
from earmark.contracts.job import (
    ActorResources,
    FailureSpec,
    JobSpec,
    LimitsSpec,
    ModelSpec,
    ResourceSpec,
)
from earmark.contracts.output import (
    OUTPUT_SCHEMA,
    OUTPUT_SCHEMA_VERSION,
    Answer,
    OutputRow,
    Segment,
    rows_to_table,
)
from earmark.contracts.tasks import BUILTIN_TASKS, TaskRequest, parse_tasks

__all__ = [
    "BUILTIN_TASKS",
    "FAMILIES",
    "OUTPUT_SCHEMA",
    "OUTPUT_SCHEMA_VERSION",
    "Answer",
    "EarmarkError",
    "ErrorKind",
    "ErrorStage",
    "FailureSpec",
    "FamilyInfo",
    "JobError",
    "JobSpec",
    "LimitsSpec",
    "ModelSpec",
    "OutputRow",
    "ResourceSpec",
    "ActorResources",
    "Segment",
    "TaskRequest",
    "family",
    "parse_tasks",
    "rows_to_table",
]
