"""The listing streams: units planned cheaply, manifests cut into chunks that together list every
row once, sizes in a manifest trusted without a request, and a listing task that hands on its
first groups before it has listed the rest of its unit (no Ray: the stage functions directly)."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pytest

from earmark.batch import listing as stage
from earmark.contracts import JobError
from earmark.sink.index import IdSet
from earmark.source import manifest, walk
from earmark.source.walk import expand_unit, list_unit, plan_units
from earmark.storage import Location
from paths import DEMO

FOX = DEMO / "s01_fox.wav"


def _manifest(tmp_path, n: int, **extra) -> str:
    shutil.copy(FOX, tmp_path / "a.wav")
    lines = [
        json.dumps({"uri": "a.wav" if i == 0 else f"x{i}.wav", "i": i, **extra}) for i in range(n)
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_manifest_in_byte_chunks_lists_every_row_exactly_once(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "CHUNK_BYTES", 200)  # lines of ~30 bytes: many chunks
    src = _manifest(tmp_path, 100, size=5)
    units = list(plan_units(src))
    assert len(units) > 10 and all(u["kind"] == "manifest" for u in units)
    rows = [r for u in units for page in list_unit(u, Location(src)) for r in page]
    assert sorted(int(dict(r["meta"])["i"]) for r in rows) == list(range(100))


def test_a_parquet_manifest_is_cut_by_row_groups(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(manifest, "CHUNK_ROWS", 10)
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": [f"f{i}.wav" for i in range(45)]}), path, row_group_size=10)
    units = list(plan_units(str(path)))
    assert [u["row_groups"] for u in units] == [[0], [1], [2], [3], [4]]
    rows = [r for u in units for page in list_unit(u, Location(str(path))) for r in page]
    assert len({r["uri"] for r in rows}) == 45


def test_a_manifest_size_is_trusted_without_a_request(tmp_path):
    """With a size column no file is stat'ed: a missing file gets its error when read, and the
    id hashes the manifest's size and version."""
    src = Location(_manifest(tmp_path, 2, size=123, etag="v1"))
    (row0, row1) = [r for u in plan_units(src) for p in list_unit(u, src) for r in p]
    assert row0["size_bytes"] == 123 != FOX.stat().st_size  # the manifest's, not the file's
    assert row1["list_error"] is None  # x1.wav does not exist: nobody asked yet
    from earmark.source.listing import audio_id_for

    assert row0["audio_id"] == audio_id_for(row0["uri"], 123, "v1")


def test_without_a_size_each_row_is_stat_ed_by_the_listing_task(tmp_path):
    src = Location(_manifest(tmp_path, 2))
    (row0, row1) = [r for u in plan_units(src) for p in list_unit(u, src) for r in p]
    assert row0["size_bytes"] == FOX.stat().st_size and row1["list_error"]["kind"] == "not_found"


def test_manifest_refusals_come_before_any_work(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"uri": "a.wav"}\n{"uri": " "}\n{"path": "b"}\n')
    with pytest.raises(JobError, match=r"2 row\(s\) with an empty 'uri' \(row 2, 3\)"):
        list(plan_units(str(tmp_path / "m.jsonl")))
    (tmp_path / "n.csv").write_text("path\nb.wav\n")
    with pytest.raises(JobError, match="no 'uri' column"):
        list(plan_units(str(tmp_path / "n.csv")))


def test_a_folder_plans_one_unit_and_a_task_fans_out_over_its_subfolders(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(FOX, tmp_path / d / "x.wav")
    shutil.copy(FOX, tmp_path / "top.wav")
    src = Location(str(tmp_path))
    (unit,) = plan_units(src)
    parts = list(expand_unit(unit, src))
    assert sorted(p["kind"] for p in parts) == ["infos", "tree", "tree"]
    rows = [r for p in parts for page in list_unit(p, src) for r in page]
    assert sorted(r["uri"].rsplit("/", 2)[-2] + "/" + r["uri"].rsplit("/", 1)[1] for r in rows) == [
        "a/x.wav", "b/x.wav", f"{tmp_path.name}/top.wav"
    ]  # fmt: skip


class _Remote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *a):
        return self.fn(*a)


class _Tally:
    """The tally actor's methods called in-process: `.add.remote(...)` records the call and
    `.units.remote(d)` moves a real Tally's count (the tasks call it as they would the actor)."""

    def __init__(self, units: int = 0):
        self.calls, self.real, self.open_seen = [], stage.Tally(units), []

    @property
    def add(self):
        return _Remote(lambda *a: self.calls.append(a))

    @property
    def units(self):
        def move(d):
            self.real.units(d)
            self.open_seen.append(self.real.units_open)

        return _Remote(move)


def test_the_listing_task_hands_on_groups_page_by_page_and_skips_done_files(monkeypatch):
    """Pages come from a generator that records how far it was read: the first groups leave the
    task before the second page is listed, and files already in the output never leave it."""
    read = []

    def pages(unit, source, col):
        for p in range(3):
            read.append(p)
            yield [{"audio_id": f"{p}-{i}".ljust(24, "0"), "uri": f"u{p}{i}", "size_bytes": 1}
                   for i in range(8)]  # fmt: skip

    monkeypatch.setattr(stage, "list_unit", pages)
    done = IdSet.of([f"0-{i}".ljust(24, "0") for i in range(4)])
    index = {"done": None, "retry": None}
    monkeypatch.setattr(stage, "resolve_index", lambda _i: (done, IdSet(np.array([], "S24"))))
    tally = _Tally()
    fn = stage.list_fn(Location("memory://nowhere"), None, 4, index, tally)
    out = fn(pa.table({"unit": [pickle.dumps({"kind": "tree"})]}))
    first = next(out)
    assert read == [0]  # only the first page was listed so far
    (group,) = [pickle.loads(g) for g in first["files"].to_pylist()]
    assert [r["audio_id"][:3] for r in group] == ["0-4", "0-5", "0-6", "0-7"]
    rest = [r for t in out for g in t["files"].to_pylist() for r in pickle.loads(g)]
    assert len(rest) == 16 and read == [0, 1, 2]
    assert tally.calls[0] == (8, 4, 0)  # listed, done before, retried


def test_walk_module_constants_bound_a_task():
    assert walk.PAGE_ROWS <= 10_000 and walk.PATHS_PER_UNIT <= 100_000


def test_the_tally_says_the_listing_goes_on_until_every_unit_is_listed(tmp_path, monkeypatch):
    """A folder split by its expand task into subfolders and pages: the open count never reaches
    0 while a part is still to be listed, and does once the last one is (progress lines show
    `N+ files (listing)` until then)."""
    import ray

    monkeypatch.setattr(ray, "get", lambda ref: ref)  # the fake tally answers at once
    monkeypatch.setattr(walk, "PAGE_ROWS", 2)  # the folder's own 5 files: 3 pages
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(FOX, tmp_path / d / "x.wav")
    for i in range(5):
        shutil.copy(FOX, tmp_path / f"top{i}.wav")
    src = Location(str(tmp_path))
    units = list(plan_units(src))
    tally = _Tally(len(units))
    expand = stage.expand_fn(src, tally)
    parts = [t["unit"][0].as_py() for t in expand(pa.table({"unit": [pickle.dumps(units[0])]}))]
    assert len(parts) == 5 and tally.real.totals()["listing"]  # 2 subfolders + 3 pages
    assert tally.real.units_open == 5 and min(tally.open_seen) > 0
    monkeypatch.setattr(stage, "resolve_index", lambda _i: (IdSet(np.array([], "S24")),) * 2)
    list_task = stage.list_fn(src, None, 64, {}, tally)
    for i, part in enumerate(parts):
        files = [r for t in list_task(pa.table({"unit": [part]})) for g in t["files"].to_pylist()
                 for r in pickle.loads(g)]  # fmt: skip
        assert files and tally.real.totals()["listing"] == (i < len(parts) - 1)
    assert tally.real.units_open == 0 and sum(c[0] for c in tally.calls) == 7


def test_listing_tasks_always_leave_room_for_a_decode_task_and_the_model():
    """Listing slots × their CPUs + one decode task + the smallest Annotator pool fit the
    cluster, and there is always at least one listing task."""
    from earmark.batch.pipeline import LIST_NUM_CPUS, listing_slots
    from earmark.contracts import ResourceSpec

    res = ResourceSpec(annotator_num_cpus=2, min_actors=2, max_actors=4)
    for cpus in (1, 2, 3, 8, 16, 64):
        for with_model in (False, True):
            slots = listing_slots(cpus, res, with_model)
            model = 4 if with_model else 0
            room = cpus - model - res.decode_num_cpus
            assert slots >= 1
            assert slots == 1 or slots * LIST_NUM_CPUS <= room + 1e-9, (cpus, with_model)
    assert listing_slots(2, ResourceSpec(), with_model=False) == 4  # 2 cores: 1 CPU listing


def test_a_remote_manifest_with_sizes_is_listed_without_stat_threads(monkeypatch):
    """Rows that give a size need no request, so no thread pool either (it costs ~50 µs a row);
    rows without one on a remote store do use it."""
    import fsspec

    from earmark.storage import Location

    used = []

    class Pool:
        def __init__(self, n):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, items):
            used.append(len(items))
            return map(fn, items)

    monkeypatch.setattr(manifest, "ThreadPoolExecutor", Pool)
    fs = fsspec.filesystem("memory")
    lines = [json.dumps({"uri": f"a{i}.wav", "size": 10, "etag": "e"}) for i in range(5)]
    fs.pipe("/m/sized.jsonl", ("\n".join(lines) + "\n").encode())
    fs.pipe("/m/a0.wav", b"x")
    fs.pipe("/m/bare.jsonl", b'{"uri": "a0.wav"}\n')
    for name, pooled in (("sized", []), ("bare", [1])):
        src = Location(f"memory:///m/{name}.jsonl")
        rows = [r for u in plan_units(src, None) for page in list_unit(u, src) for r in page]
        assert rows and all(r["list_error"] is None for r in rows), rows
        assert used == pooled, name
