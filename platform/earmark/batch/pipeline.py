"""The Ray Data graph, in data-flow order:

    listing groups → decode + resample + segment (CPU tasks)
                   → Annotator (actor pool; length-bucketed, encode once per window; writes
                     each batch as one deterministic, atomic Parquet shard) → summary rows

`earmark scan` is the same graph without the Annotator: each decode task writes its group's
shard. There is no writer stage. A separate one cost a task launch and an object-store round
trip per batch. On 2 cores it also stalled the pool: a 0.1-CPU writer task found no CPU while a
1-CPU decode task and a 1-CPU actor held both, so finished rows queued up, Ray Data
backpressured the Annotator and the actor sat idle until decoding ended (`bench run`, eureka,
462 files: 3.8 s idle in a 51 s run on a quiet machine, 4.4 s in 76 s under load).
"""

from __future__ import annotations

import pickle
from typing import Any

import pyarrow as pa

from earmark.annotate.annotator import Annotator
from earmark.annotate.decoded import DecodeStage, to_work_table
from earmark.compute.resources import annotator_options
from earmark.contracts import JobSpec
from earmark.sink.shards import write_rows

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
# Blocks handed to one Annotator actor at a time: one in the model, the next one fetched and
# converted meanwhile (Ray Data runs the UDF itself one call at a time), so the model never waits
# for the driver to dispatch. Two, as before, bounds the decoded audio queued per actor.
ANNOTATOR_BLOCKS_IN_FLIGHT = 2


def build_dataset(
    spec: JobSpec,
    todo: list[dict[str, Any]],
    *,
    with_model: bool,
    ledger: Any = None,
    decode_ledger: Any = None,
) -> Any:
    import ray.data

    # Ray Data's per-operator reservation splits half the cluster evenly between the eligible
    # operators: on a small cluster it caps the decode stage at one task (2 CPUs: scan 1.6×
    # slower, `earmark bench decode`). Without it, object-store backpressure still bounds the
    # blocks in flight.
    ray.data.DataContext.get_current().op_resource_reservation_enabled = RESERVE_OP_RESOURCES
    res = spec.resources
    family = spec.model.family if with_model else None
    # One item (the pickled listing rows of a group) per block, built in this process: Ray's
    # from_arrow runs a remote metadata task per block before anything starts (one per group,
    # up to 4096; 58 groups of 462 files on 2 cores: first decode task after 4.7 s quiet, 6.6 s
    # under load, against 0.6 s now).
    groups = [
        {"files": pickle.dumps(todo[start : start + n], protocol=pickle.HIGHEST_PROTOCOL)}
        for start, n in decode_groups(todo, res.files_per_batch)
    ]
    ds = ray.data.from_items(groups, override_num_blocks=max(1, len(groups)))
    ds = ds.map_batches(
        _decode_fn(spec, family, decode_ledger),
        batch_size=None,  # one group (see decode_groups) per task
        batch_format="pyarrow",
        num_cpus=res.decode_num_cpus,
        # a task whose process crashed is retried (file by file, see DecodeStage.decode_group)
        # within the job's failure budget, never without end
        max_retries=spec.failures.max_fatal_failures + 1,
    )
    if with_model:
        model_args = (spec.model.model_dump(), [t.model_dump() for t in spec.tasks])
        ds = ds.map_batches(
            Annotator,
            fn_constructor_args=(*model_args, spec.output, spec.storage_options, ledger),
            batch_size=res.files_per_batch,  # one batch = one shard
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                min_size=res.min_actors,
                max_size=res.max_actors,
                max_tasks_in_flight_per_actor=ANNOTATOR_BLOCKS_IN_FLIGHT,
                max_concurrent_calls_per_actor=ANNOTATOR_BLOCKS_IN_FLIGHT,
            ),
            # a killed actor is restarted and its blocks retried, within the job's failure
            # budget: the ledger stops the job first, these bounds only make sure nothing
            # retries without end if it cannot (earmark.annotate.failures)
            max_restarts=spec.failures.max_fatal_failures + 1,
            max_task_retries=spec.failures.max_fatal_failures + 1,
            **annotator_options(res),
        )
    return ds


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


def _decode_fn(spec: JobSpec, family: str | None, ledger: Any = None):
    limits, opts, job_id, output = (
        spec.limits.model_dump(),
        spec.storage_options,
        spec.job_id,
        spec.output,
    )

    def decode(batch: pa.Table):
        stage = DecodeStage(limits, opts, job_id, family, ledger)
        recs = [r for g in batch.column("files").to_pylist() for r in pickle.loads(g)]
        if family is None:  # scan: rows without samples are small; the group is one shard
            yield write_rows(to_work_table(list(stage.decode_group(recs))), output, opts)
            return
        # yielded per file: Ray Data emits a block whenever its target block size is reached,
        # so a task holds at most about one block plus the file being decoded
        for row in stage.decode_group(recs):
            yield to_work_table([row])

    return decode
