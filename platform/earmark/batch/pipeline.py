"""The Ray Data graph, in data-flow order:

    source units → expand → list + skip done + group (tasks; batch.listing)
                 → decode + resample + segment (CPU tasks: one group each with a model,
                   a block of a few groups in a scan)
                 → Annotator (actor pool; length-bucketed, encode once per window; stages
                   each batch as one deterministic, atomic file) → summary rows

Everything streams: the first groups are decoded while the source is still being listed, and
the driver holds only the units it planned and the summary rows flowing back. Blocks are small
(SCAN_BLOCK_BYTES), so a listing task's groups leave it a few at a time; with a model each group (a
few kB) is split into its own block (`repartition`), so each is its own decode task.

`earmark scan` is the same graph without the Annotator: each decode task stages its group.
There is no writer stage. A separate one cost a task launch and an object-store round trip per
batch. On 2 cores it also stalled the pool: a 0.1-CPU writer task found no CPU while a 1-CPU
decode task and a 1-CPU actor held both, so finished rows queued up, Ray Data backpressured the
Annotator and the actor sat idle until decoding ended (`bench run`, eureka, 462 files: 3.8 s
idle in a 51 s run on a quiet machine, 4.4 s in 76 s under load).
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import pyarrow as pa

from earmark.annotate.annotator import Annotator
from earmark.annotate.decoded import DecodeStage, to_work_table
from earmark.batch.listing import SCAN_GROUP_FILES, expand_fn, list_fn, resolve_index
from earmark.compute.resources import annotator_options
from earmark.contracts import JobSpec, ResourceSpec
from earmark.sink.shards import write_rows
from earmark.storage import Location

# Ray Data's target block size for a scan's stages. Small, so that blocks flow: a listing
# task's groups leave it a few at a time (a scan group of 256 files is ~50 kB: 2-3 per block,
# one decode task each), and a decode task's rows reach the driver when it ends. At 8 MB a
# decode task of a scan got 160 groups (41k files) and the first row of a 300k-file scan
# reached the driver after 55 s; splitting blocks with `repartition` instead ran 1-CPU tasks
# that took the CPUs decoding needed (300k files: 188 s against 98 s).
SCAN_BLOCK_BYTES = 128 << 10
# With a model, a decoded group (its audio: MBs) must stay one block, so that an Annotator
# batch is exactly one group whatever order the blocks arrive in (Whisper packs the windows of
# a batch together: a batch made of other files changes their transcripts from run to run).
MODEL_BLOCK_BYTES = 8 << 20
LIST_NUM_CPUS = 0.25  # listing waits on storage far more than it computes
RESERVE_OP_RESOURCES = False  # Ray Data's per-operator resource reservation (see build_dataset)
# Blocks handed to one Annotator actor at a time: one in the model, the next one fetched and
# converted meanwhile (Ray Data runs the UDF itself one call at a time), so the model never waits
# for the driver to dispatch. Two, as before, bounds the decoded audio queued per actor.
ANNOTATOR_BLOCKS_IN_FLIGHT = 2


def build_dataset(
    spec: JobSpec,
    units: list[dict[str, Any]],
    index: dict[str, Any],
    tally: Any,
    *,
    source: Location,
    out: Location,
    with_model: bool,
    ledger: Any = None,
    decode_ledger: Any = None,
) -> Any:
    """The job's graph over its `source` and `out` (built once by the runner; each task gets
    them pickled, as URL and options, and builds its filesystem on first use)."""
    import ray.data

    # Ray Data's per-operator reservation splits half the cluster evenly between the eligible
    # operators: on a small cluster it caps the decode stage at one task (2 CPUs: scan 1.6×
    # slower, `earmark bench decode`). Without it, object-store backpressure still bounds the
    # blocks in flight.
    # the listing slots are a cap, not a demand: a source of fewer units than slots is normal
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks for")
    ctx = ray.data.DataContext.get_current()
    ctx.op_resource_reservation_enabled = RESERVE_OP_RESOURCES
    # a listing task hands on its groups once this many bytes are listed (Ray Data's default,
    # 128 MiB, would hold back the first groups of a large folder until it is fully listed)
    ctx.target_max_block_size = MODEL_BLOCK_BYTES if with_model else SCAN_BLOCK_BYTES
    res = spec.resources
    family = spec.model.family if with_model else None
    ds = ray.data.from_items(
        [{"unit": pickle.dumps(u, protocol=pickle.HIGHEST_PROTOCOL)} for u in units],
        override_num_blocks=max(1, len(units)),
    )
    ds = ds.map_batches(
        expand_fn(source, tally), batch_size=None, batch_format="pyarrow", num_cpus=LIST_NUM_CPUS
    ).repartition(target_num_rows_per_block=1)
    max_files = res.files_per_batch if with_model else SCAN_GROUP_FILES
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    ds = ds.map_batches(
        list_fn(source, spec.audio_column, max_files, index, tally),
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=LIST_NUM_CPUS,
        compute=ray.data.TaskPoolStrategy(size=listing_slots(cpus, res, with_model)),
    )
    if with_model:  # one group (files_per_batch files, a few kB) per decode task
        ds = ds.repartition(target_num_rows_per_block=1)
    ds = ds.map_batches(
        _decode_fn(spec, source, out, family, decode_ledger, index, tally),
        batch_size=None,  # one block per task: one group with a model, a few in a scan
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
            fn_constructor_args=(*model_args, out, ledger),
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


def listing_slots(cluster_cpus: float, res: ResourceSpec, with_model: bool) -> int:
    """Listing tasks at once: as many as fit beside one decode task and the smallest Annotator
    pool. Unbounded, the listing tasks of a large manifest (5 chunks of a 1M-row manifest at
    0.25 CPU) left less than a decode task's CPU free, and no file was decoded until the whole
    listing was done (55-75 s on 2 cores); this way decoding starts with the first page."""
    model = res.min_actors * res.annotator_num_cpus if with_model else 0.0
    free = cluster_cpus - model - res.decode_num_cpus
    return max(1, int(free / LIST_NUM_CPUS + 1e-9))


def _decode_fn(
    spec: JobSpec,
    source: Location,
    out: Location,
    family: str | None,
    ledger: Any,
    index: dict[str, Any],
    tally: Any,
):
    limits, job_id, engine = spec.limits.model_dump(), spec.job_id, spec.model.engine

    def decode(batch: pa.Table):
        done, retry = resolve_index(index)
        stage = DecodeStage(
            limits, source, job_id, family, ledger, skip=(done, retry, tally), engine=engine
        )
        recs = [r for g in batch.column("files").to_pylist() for r in pickle.loads(g)]
        if family is None:  # scan: rows without samples are small; the group is one shard
            yield write_rows(to_work_table(list(stage.decode_group(recs))), out)
            return
        # yielded per file: Ray Data emits a block whenever its target block size is reached,
        # so a task holds at most about one block plus the file being decoded
        for row in stage.decode_group(recs):
            yield to_work_table([row])

    return decode
