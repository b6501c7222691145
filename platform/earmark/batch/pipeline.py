"""The Ray Data graph, in data-flow order:

    listing rows → decode + resample + segment (CPU tasks)
                 → Annotator (actor pool; length-bucketed, encode once per window)
                 → ShardWriter (deterministic, atomic Parquet shards) → summary rows

`earmark scan` is the same graph without the Annotator.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from earmark.annotator import Annotator
from earmark.batch.stages import DecodeStage, ShardWriter
from earmark.resources import WRITER_NUM_CPUS, annotator_options
from earmark.schemas import JobSpec

LISTING_SCHEMA = pa.schema(
    [
        ("audio_id", pa.string()),
        ("uri", pa.string()),
        ("size_bytes", pa.int64()),
        ("meta", pa.map_(pa.string(), pa.string())),
        ("list_error", pa.struct([("kind", pa.string()), ("message", pa.string())])),
    ]
)
MAX_LISTING_BLOCKS = 4096  # one block per file up to this; then files share blocks
DECODE_FILES_PER_TASK = 1  # decode is per file: small tasks keep every core busy and retries cheap


def listing_table(rows: list[dict[str, Any]]) -> pa.Table:
    cols = {n: [r.get(n) for r in rows] for n in LISTING_SCHEMA.names}
    cols["meta"] = [list(m.items()) if isinstance(m, dict) else m for m in cols["meta"]]
    return pa.table(cols, schema=LISTING_SCHEMA)


def build_dataset(spec: JobSpec, todo: list[dict[str, Any]], *, with_model: bool) -> Any:
    import ray.data

    table = listing_table(todo)
    n_blocks = max(1, min(len(todo), MAX_LISTING_BLOCKS))
    step = -(-table.num_rows // n_blocks)
    blocks = [table.slice(i, step) for i in range(0, table.num_rows, step)]
    res = spec.resources
    family = spec.model.family if with_model else None

    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        _decode_fn(spec, family),
        batch_size=DECODE_FILES_PER_TASK,
        batch_format="pyarrow",
        num_cpus=res.decode_num_cpus,
    )
    if with_model:
        ds = ds.map_batches(
            Annotator,
            fn_constructor_args=(spec.model.model_dump(), [t.model_dump() for t in spec.tasks]),
            batch_size=res.files_per_batch,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors),
            max_restarts=-1,  # a killed actor is replaced ...
            max_task_retries=-1,  # ... and its batch handed to another one
            **annotator_options(res),
        )
    ds = ds.map_batches(
        _writer_fn(spec),
        batch_size=res.files_per_batch,
        batch_format="pyarrow",
        num_cpus=WRITER_NUM_CPUS,
    )
    return ds


def _decode_fn(spec: JobSpec, family: str | None):
    limits, opts, job_id = spec.limits.model_dump(), spec.storage_options, spec.job_id

    def decode(batch: pa.Table) -> pa.Table:
        return DecodeStage(limits, opts, job_id, family)(batch)

    return decode


def _writer_fn(spec: JobSpec):
    output, opts = spec.output, spec.storage_options

    def write(batch: pa.Table) -> pa.Table:
        return ShardWriter(output, opts)(batch)

    return write
