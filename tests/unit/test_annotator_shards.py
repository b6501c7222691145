"""The batch Annotator writes its own shards (annotate.annotator + sink.shards), no Ray.

A fake backend stands in for the model: these tests are about rows, shard names, retries and
error rows, not about transcripts.
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest

from earmark.annotate import annotator as annotator_mod
from earmark.annotate.annotator import Annotator
from earmark.annotate.decoded import to_work_table
from earmark.audio.windows import SAMPLE_RATE, Window
from earmark.contracts import FAMILIES
from earmark.sink.shards import SUMMARY_COLUMNS, ids_digest, read_output


class FakeModel:
    info = FAMILIES["whisper"]
    name = "fake:model"

    def __init__(self) -> None:
        self.calls = 0

    def check_tasks(self, tasks) -> None:
        pass

    def check_window(self, w: Window) -> None:
        if w.num_samples <= 0:
            from earmark.models.base import ModelInputError

            raise ModelInputError(f"window {w.index} of {w.audio_id} is empty (0 samples)")

    def annotate(self, windows, tasks):
        self.calls += 1
        return [{t.name: f"text of {w.audio_id}/{w.index}" for t in tasks} for w in windows]


@pytest.fixture
def fake_model(monkeypatch):
    model = FakeModel()
    monkeypatch.setattr(annotator_mod, "load_model", lambda spec: model)
    return model


def decoded_rows(n: int, *, broken: int | None = None, empty: int | None = None) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"audio_id": f"id{i:02d}", "uri": f"/a/{i}.wav", "status": "ok", "meta": None}
        if i == broken:  # a decode error row: passes through the Annotator untouched
            row.update(status="error", error_stage="decode", error_kind="corrupt", error="bad")
        else:
            samples = 0 if i == empty else SAMPLE_RATE * (1 + i % 3)
            w = Window(f"id{i:02d}", 0, 0.0, samples / SAMPLE_RATE, samples,
                       {"audio": np.zeros(samples, np.float32)})  # fmt: skip
            row.update(duration_s=samples / SAMPLE_RATE, num_windows=1)
            row["payload"] = pickle.dumps([w])
        rows.append(row)
    return rows


def test_writes_one_shard_per_block_and_returns_summary_columns(tmp_path, fake_model):
    out = tmp_path / "out"
    ann = Annotator({"family": "whisper"}, [{"name": "asr"}], str(out))
    rows = decoded_rows(5, broken=1, empty=3)
    summary = ann(to_work_table(rows))
    assert summary.column_names == [*SUMMARY_COLUMNS, "_staged", "_staged_bytes"]
    assert summary.num_rows == 5
    shards = list((out / "_staging").glob("*.staged"))  # staged, to be folded into a part
    assert [s.name for s in shards] == [ids_digest([r["audio_id"] for r in rows]) + ".staged"]
    assert set(summary.column("_staged").to_pylist()) == {str(shards[0])}
    assert set(summary.column("_staged_bytes").to_pylist()) == {shards[0].stat().st_size}
    written = {r["audio_id"]: r for r in pq.read_table(shards[0]).to_pylist()}
    assert written["id00"]["transcript"] == "text of id00/0" and written["id00"]["model"]
    assert written["id00"]["created_at"] is not None
    assert written["id01"]["status"] == "error" and written["id01"]["error_stage"] == "decode"
    assert written["id03"]["status"] == "error" and written["id03"]["error_stage"] == "infer"
    assert "payload" not in pq.read_schema(shards[0]).names
    by_id = {r["audio_id"]: r for r in summary.to_pylist()}
    assert by_id["id03"]["status"] == "error" and by_id["id00"]["infer_s"] >= 0


def test_a_retried_block_overwrites_its_shard(tmp_path, fake_model):
    out = tmp_path / "out"
    ann = Annotator({"family": "whisper"}, [{"name": "asr"}], str(out))
    block = to_work_table(decoded_rows(4))
    ann(block)
    Annotator({"family": "whisper"}, [{"name": "asr"}], str(out))(block)  # the retry
    assert len(list((out / "_staging").iterdir())) == 1
    assert not [p for p in out.rglob(".tmp-*")]
    ids = read_output(str(out), columns=["audio_id"], staged=True).column("audio_id").to_pylist()
    assert sorted(ids) == ["id00", "id01", "id02", "id03"]


def test_without_output_rows_come_back_whole(tmp_path, fake_model):
    ann = Annotator({"family": "whisper"}, [{"name": "asr"}])  # Serve and `earmark annotate`
    table = ann(to_work_table(decoded_rows(2)))
    assert table.num_rows == 2 and "transcript" in table.column_names
    assert table.column("payload").null_count == 2
    assert not list(tmp_path.iterdir())
