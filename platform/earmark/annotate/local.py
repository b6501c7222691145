"""Annotate a few files in this process, without Ray (`earmark annotate`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from earmark.annotate.annotator import Annotator
from earmark.annotate.decoded import DecodeStage
from earmark.annotate.failures import FatalModelError
from earmark.contracts import JobError, LimitsSpec, ModelSpec, TaskRequest
from earmark.models.base import ModelLoadError
from earmark.source.walk import list_named


def annotate_files(
    paths: list[str], model: ModelSpec, tasks: list[TaskRequest]
) -> list[dict[str, Any]]:
    """Output-row dicts, one per file, through the same decode stage and Annotator as a job."""
    from earmark.models.registry import model_class

    cls = model_class(model.family, model.engine)
    try:
        cls.preflight(model.checkpoint or cls.info.default_checkpoint)
        annotator = Annotator(model, tasks)
    except (ModelLoadError, OSError) as exc:
        raise JobError(f"model cannot be loaded: {exc}") from exc
    rows = []
    decode = DecodeStage(LimitsSpec(), None, "local", model.family, engine=model.engine)
    for listed in list_named(paths):
        table = decode(_listing_table([listed]))
        try:
            row = annotator(table).to_pylist()[0]
        except FatalModelError as exc:  # the model's failure, not the file's: no row
            raise JobError(
                f"the model failed while annotating {listed['uri']} ({exc}); this is not a "
                "problem of the file: check the device and the checkpoint"
            ) from exc
        row.pop("payload", None)
        row.pop("_pad_real", None)
        row.pop("_pad_total", None)
        row["meta"] = dict(row["meta"]) if row.get("meta") else None
        row["created_at"] = dt.datetime.now(dt.UTC).isoformat()
        rows.append(row)
    return rows


def _listing_table(rows):
    from earmark.source.listing import listing_table

    return listing_table(rows)
