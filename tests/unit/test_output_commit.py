"""The output folder: staged batches folded into right-sized parts exactly once (a kill between
any two steps of a fold loses and duplicates nothing), the index a rerun reads, and the repair
that keeps one row per file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from earmark.contracts import JobError
from earmark.sink import commit
from earmark.sink.commit import fold, fold_staging, plan_folds, recover
from earmark.sink.index import IdSet, scan_output
from earmark.sink.repair import repair_output
from earmark.sink.shards import list_parts, list_staged, read_output, stage_shard, write_shard
from output_rows import ok_rows, rows_table

ROOT = Path(__file__).resolve().parents[2]


def _ids(out: Path, staged: bool = False) -> list[str]:
    return sorted(
        read_output(str(out), columns=["audio_id"], staged=staged)["audio_id"].to_pylist()
    )


def _stage(out: Path, batches: list[list[str]]) -> list[str]:
    return [stage_shard(ok_rows(ids), str(out))[0] for ids in batches]


def test_staged_batches_are_invisible_to_readers_until_folded(tmp_path):
    import duckdb
    import polars as pl

    paths = _stage(tmp_path, [["a", "b"], ["c"], ["d", "e"]])
    assert _ids(tmp_path) == [] and len(list_staged(str(tmp_path))) == 3
    result = fold(str(tmp_path), paths)
    assert result.rows == 5 and list_staged(str(tmp_path)) == []
    assert _ids(tmp_path) == ["a", "b", "c", "d", "e"]
    # readers of the folder as is, staging and journal folders included in their globs
    con = duckdb.connect()
    n = con.execute(f"select count(*) from read_parquet('{tmp_path}/**/*.parquet')").fetchone()[0]
    assert n == 5
    assert pl.scan_parquet(f"{tmp_path}/*.parquet").select(pl.len()).collect().item() == 5
    assert pq.read_table(str(tmp_path)).num_rows == 5  # pyarrow's folder reader


def test_plan_folds_cuts_by_size_and_keeps_the_rest_until_the_end():
    staged = [(f"s{i}", 40) for i in range(7)]
    assert plan_folds(staged, 100, final=False) == [["s0", "s1", "s2"], ["s3", "s4", "s5"]]
    assert plan_folds(staged, 100, final=True)[-1] == ["s6"]
    assert fold_staging  # the end of a job folds what is left (tested below)


def test_fold_staging_makes_right_sized_parts(tmp_path):
    _stage(tmp_path, [[f"{b}-{i}" for i in range(50)] for b in range(12)])
    one = list_staged(str(tmp_path))[0][1]
    fold_staging(str(tmp_path), target_bytes=one * 4)
    assert len(list_parts(str(tmp_path))) == 3 and len(_ids(tmp_path)) == 600
    meta = pq.ParquetFile(list_parts(str(tmp_path))[0]).metadata
    assert meta.num_row_groups == 1  # folded into one row group, not one per batch


KILL_SCRIPT = """
import os, sys, json
sys.path.insert(0, {platform!r})
from earmark.sink import commit
stop_at = int(sys.argv[2]); seen = []
def hook(step):
    seen.append(step)
    if len(seen) == stop_at:
        os._exit(9)
commit.STEP_HOOK = hook
sources = json.loads(sys.argv[3])
drop = json.loads(sys.argv[4]) or None
commit.fold(sys.argv[1], sources, drop=drop)
"""


def _fold_killed_after(out: Path, step: int, sources: list[str], drop=None) -> int:
    script = KILL_SCRIPT.format(platform=str(ROOT / "platform"))
    args = [sys.executable, "-c", script, str(out), str(step), json.dumps(sources)]
    return subprocess.run([*args, json.dumps(drop or {})], check=False).returncode


STEPS = ["journaled", "published", "source_deleted", "source_deleted", "source_deleted"]


@pytest.mark.parametrize("step", range(1, len(STEPS) + 2))
def test_a_fold_killed_between_any_two_steps_loses_and_duplicates_nothing(tmp_path, step):
    write_shard(ok_rows(["p1", "p2"]), str(tmp_path))  # a part committed earlier
    sources = _stage(tmp_path, [["a", "b"], ["c"], ["d"]])
    code = _fold_killed_after(tmp_path, step, sources)
    assert code == 9  # the process really died at that step
    # what a reader sees before anyone recovers: committed rows at most once each
    seen = _ids(tmp_path)
    assert len(seen) == len(set(seen)) and {"p1", "p2"} <= set(seen)
    # every row is somewhere, exactly as often as the next run will count it
    recover(str(tmp_path))
    assert _ids(tmp_path, staged=True) == ["a", "b", "c", "d", "p1", "p2"]
    fold_staging(str(tmp_path), target_bytes=1 << 30)
    assert _ids(tmp_path) == ["a", "b", "c", "d", "p1", "p2"]
    assert list_staged(str(tmp_path)) == [] and not os.listdir(tmp_path / "_commits")


@pytest.mark.parametrize("step", range(1, 5))
def test_a_repair_killed_between_any_two_steps_loses_no_row(tmp_path, step):
    """Dropping a row from a visible part: the rewritten part is published before the old one
    goes; a kill leaves at worst a duplicate that the next repair removes."""
    part = write_shard(
        rows_table([("a", None, "ok", None, 1), ("b", None, "error", "x", 1)]), str(tmp_path)
    )
    write_shard(rows_table([("b", None, "ok", None, 5)]), str(tmp_path))  # b's newer row
    assert _fold_killed_after(tmp_path, step, [part], {part: [1]}) == 9
    recover(str(tmp_path))
    got = repair_output(str(tmp_path))
    assert _ids(tmp_path) == ["a", "b"] and got["rows"] == 2
    rows = {r["audio_id"]: r["status"] for r in read_output(str(tmp_path)).to_pylist()}
    assert rows == {"a": "ok", "b": "ok"}


def test_index_of_done_retry_and_rows_to_drop(tmp_path):
    out = str(tmp_path)
    write_shard(
        rows_table([("a", None, "ok", None, 1), ("b", None, "error", "model_crash", 1)]), out
    )
    write_shard(
        rows_table([("c", None, "error", "not_found", 2), ("d", None, "error", "model_crash", 3)]),
        out,
    )
    # a run stopped after writing d's new row, before removing the old error row
    write_shard(rows_table([("d", None, "ok", None, 9)]), out)
    # e's file changed since: the new version (e2, same URI) was annotated later
    write_shard(rows_table([("e", "file:///e.wav", "ok", None, 1)]), out)
    stage_shard(
        rows_table([("e2", "file:///e.wav", "ok", None, 7), ("a", None, "ok", None, 1)]), out
    )
    index = scan_output(out, retry_kinds=frozenset({"model_crash"}))
    assert list(index.done.contains(["a", "b", "c", "d", "e", "e2", "zz"])) == [True] * 6 + [False]
    assert list(index.retry.contains(["b", "d", "c"])) == [True, False, False]
    assert len(scan_output(out, retry_kinds=frozenset()).retry) == 2  # b and c
    assert len(scan_output(out).retry) == 0  # a plain rerun retries nothing
    assert (index.duplicates, index.superseded, index.rows, index.ok) == (1, 2, 5, 3)
    fold_staging(out, 1 << 30)
    got = repair_output(out)
    assert got["rows"] == 5 and _ids(tmp_path) == ["a", "b", "c", "d", "e2"]
    rows = {r["audio_id"]: r["status"] for r in read_output(out).to_pylist()}
    assert rows == {"a": "ok", "b": "error", "c": "error", "d": "ok", "e2": "ok"}
    assert repair_output(out) == {**got, "duplicates": 0, "superseded": 0, "rows": 5, "ok": 3}


def test_a_uri_hash_collision_never_drops_a_row(tmp_path, monkeypatch):
    from earmark.sink import index as index_mod

    write_shard(rows_table([("a", "file:///1.wav", "ok", None, 1)]), str(tmp_path))
    write_shard(rows_table([("b", "file:///2.wav", "ok", None, 2)]), str(tmp_path))
    monkeypatch.setattr(index_mod, "hash", lambda _u: 42, raising=False)
    got = scan_output(str(tmp_path))
    assert got.rows == 2 and got.drop == {}


def test_id_set_membership():
    s = IdSet.of(["b" * 24, "a" * 24, "c" * 24, "a" * 24])
    assert len(s) == 3
    assert list(s.contains(["a" * 24, "d" * 24, "c" * 24])) == [True, False, True]
    assert list(IdSet.of([]).contains(["a" * 24])) == [False]


def test_unreadable_file_in_the_output_is_a_clear_refusal(tmp_path):
    (tmp_path / "part-bad.parquet").write_text("not parquet")
    with pytest.raises(JobError, match="cannot read as one of its own"):
        scan_output(str(tmp_path))


def test_step_hook_is_off_by_default():
    assert commit.STEP_HOOK is None
