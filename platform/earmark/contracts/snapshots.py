"""Snapshots of the contracts under schemas/: JSON Schema of the job spec and the output row,
and the Arrow schema of the output. A test regenerates them and fails on drift."""

from __future__ import annotations

import json
from pathlib import Path

from earmark.contracts import OUTPUT_SCHEMA, OUTPUT_SCHEMA_VERSION, JobSpec, OutputRow


def arrow_schema_doc() -> dict:
    return {
        "version": OUTPUT_SCHEMA_VERSION,
        "fields": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in OUTPUT_SCHEMA
        ],
    }


def snapshots() -> dict[str, str]:
    """File name → content, exactly as committed."""
    dump = lambda obj: json.dumps(obj, indent=2, sort_keys=True) + "\n"  # noqa: E731
    return {
        "job_spec.schema.json": dump(JobSpec.model_json_schema()),
        "output_row.schema.json": dump(OutputRow.model_json_schema()),
        "output.arrow.json": dump(arrow_schema_doc()),
    }


def export(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in snapshots().items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written
