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
from earmark.batch.stages import DecodeStage, ShardWriter, to_work_table
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
MAX_LISTING_BLOCKS = 4096  # at most this many decode tasks; past it files share blocks evenly
# One listing block = one decode task. Scheduling a Ray task costs ~10-100 ms of driver and
# raylet time (more on a busy machine), as much as decoding a short clip, and the decode stage
# runs on the CPUs the actors leave free (often one): with one file per task, short files made
# the decode stage the bottleneck (bench run: 154 demo clips, 60 ms of work and ~170 ms between
# tasks each). Small files therefore share a task, up to `files_per_batch` files (so one task's
# output is one Annotator batch and every actor gets work) and DECODE_TASK_BYTES; a large file
# still gets a task of its own, so big files stay spread over the cluster and a retry stays
# cheap. The UDF yields file by file, so Ray Data can cut its output into blocks as it goes.
DECODE_TASK_BYTES = 8 << 20  # compressed bytes per decode task (≈1 min of WAV, ≈8 of MP3)
RESERVE_OP_RESOURCES = False  # Ray Data's per-operator resource reservation (see build_dataset)
# A shard write takes ~30 ms locally (more on S3); each concurrent writer is a worker process of
# ~150 MB RSS. Uncapped, 0.1-CPU writers grew a 2-CPU scan from 12 to 19 processes (+1.1 GB).
WRITER_TASKS_PER_CPU = 0.25  # concurrent writer tasks per cluster CPU ...
WRITER_MAX_TASKS = 16  # ... at most this many, at least one


def listing_table(rows: list[dict[str, Any]]) -> pa.Table:
    cols = {n: [r.get(n) for r in rows] for n in LISTING_SCHEMA.names}
    cols["meta"] = [list(m.items()) if isinstance(m, dict) else m for m in cols["meta"]]
    return pa.table(cols, schema=LISTING_SCHEMA)


def build_dataset(spec: JobSpec, todo: list[dict[str, Any]], *, with_model: bool) -> Any:
    import ray.data

    # Ray Data's per-operator reservation splits half the cluster evenly between the eligible
    # operators: on a small cluster it holds half a CPU for the 0.1-CPU writer and caps the
    # decode stage at one task (2 CPUs: scan 1.6× slower, `earmark bench decode`). Without it,
    # object-store backpressure still bounds the blocks in flight, and the writer pool is capped
    # below so that 0.1-CPU writers cannot fill the machine with idle worker processes.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = RESERVE_OP_RESOURCES
    table = listing_table(todo)
    res = spec.resources
    blocks = [table.slice(start, n) for start, n in decode_groups(todo, res.files_per_batch)]
    family = spec.model.family if with_model else None

    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        _decode_fn(spec, family),
        batch_size=None,  # one listing block (see decode_groups) per task
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
        compute=ray.data.TaskPoolStrategy(size=writer_tasks()),
    )
    return ds


def writer_tasks() -> int:
    """Concurrent shard writers for the connected cluster (each task needs a worker process)."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1.0)
    return max(1, min(WRITER_MAX_TASKS, int(cpus * WRITER_TASKS_PER_CPU)))


def decode_groups(rows: list[dict[str, Any]], max_files: int) -> list[tuple[int, int]]:
    """(start, count) of consecutive listing rows that share a decode task.

    A group closes when adding the next file would pass DECODE_TASK_BYTES (a file larger than
    that is a group of its own) or when it holds `max_files` files; unknown sizes count as 0.
    Past MAX_LISTING_BLOCKS groups, the rows are cut into that many equal groups.
    """
    groups: list[tuple[int, int]] = []
    start, size = 0, 0
    for i, r in enumerate(rows):
        b = r.get("size_bytes") or 0
        n = i - start
        if n and (n >= max_files or size + b > DECODE_TASK_BYTES):
            groups.append((start, n))
            start, size = i, 0
        size += b
    if rows:
        groups.append((start, len(rows) - start))
    if len(groups) > MAX_LISTING_BLOCKS:
        step = -(-len(rows) // MAX_LISTING_BLOCKS)
        groups = [(i, min(step, len(rows) - i)) for i in range(0, len(rows), step)]
    return groups


def _decode_fn(spec: JobSpec, family: str | None):
    limits, opts, job_id = spec.limits.model_dump(), spec.storage_options, spec.job_id

    def decode(batch: pa.Table):
        stage = DecodeStage(limits, opts, job_id, family)
        # yielded per file: Ray Data emits a block whenever its target block size is reached,
        # so a task holds at most about one block plus the file being decoded
        for rec in batch.to_pylist():
            yield to_work_table([stage.decode_one(rec)])

    return decode


def _writer_fn(spec: JobSpec):
    output, opts = spec.output, spec.storage_options

    def write(batch: pa.Table) -> pa.Table:
        return ShardWriter(output, opts)(batch)

    return write
