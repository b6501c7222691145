"""Listing, the output folder's bookkeeping and the CLI's refusals, without Ray: the cases a
review of the batch CLI found (wrong error kinds, one file listed twice, a scan's rows counted
as an annotation's, tracebacks instead of messages)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from earmark.cli import app
from earmark.compute.resources import check_reachable
from earmark.contracts import JobError
from earmark.sink.shards import claim_output
from earmark.source.walk import list_named, list_source
from earmark.storage import parse_storage_options
from paths import DEMO

FOX = DEMO / "s01_fox.wav"


def test_broken_links_and_loops_in_a_folder_are_named_as_such(tmp_path):
    shutil.copy(FOX, tmp_path / "good.wav")
    (tmp_path / "good_link.wav").symlink_to(tmp_path / "good.wav")
    (tmp_path / "broken.wav").symlink_to(tmp_path / "nowhere.wav")
    (tmp_path / "l1.wav").symlink_to(tmp_path / "l2.wav")
    (tmp_path / "l2.wav").symlink_to(tmp_path / "l1.wav")
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in list_source(str(tmp_path))}
    assert rows["good.wav"]["list_error"] is None and rows["good_link.wav"]["list_error"] is None
    assert rows["good_link.wav"]["size_bytes"] == FOX.stat().st_size
    assert rows["broken.wav"]["list_error"]["kind"] == "not_found"
    assert rows["l1.wav"]["list_error"]["kind"] == "unreachable"
    assert "symbolic links" in rows["l1.wav"]["list_error"]["message"]


def test_a_folder_whose_name_looks_like_a_glob_is_a_folder(tmp_path):
    for name in ("take [1]", "q?dir"):
        (tmp_path / name).mkdir()
        shutil.copy(FOX, tmp_path / name / "a.wav")
        (uri,) = [r["uri"] for r in list_source(str(tmp_path / name))]
        assert uri.endswith(f"{name}/a.wav")


def test_manifest_paths_are_normalized_so_a_file_named_twice_is_one_row(tmp_path):
    shutil.copy(FOX, tmp_path / "a.wav")
    (tmp_path / "sub").mkdir()
    lines = [
        {"uri": "a.wav"},
        {"uri": f"{tmp_path}/sub/../a.wav"},
        {"uri": f"file://{tmp_path}/./a.wav"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    (row,) = list_source(str(tmp_path / "m.jsonl"))
    assert row["uri"] == f"file://{tmp_path}/a.wav" and row["list_error"] is None


def test_manifest_with_empty_uris_is_refused_naming_the_rows(tmp_path):
    lines = [{"uri": str(FOX)}, {"uri": ""}, {"uri": None}, {"uri": "  "}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    with pytest.raises(JobError, match=r"3 row\(s\) with an empty 'uri' \(row 2, 3, 4\)"):
        list_source(str(tmp_path / "m.jsonl"))


def test_manifest_meta_keeps_types_as_json_and_nulls_as_absent(tmp_path):
    lines = [
        {"uri": str(FOX), "speaker": "ann", "ok": True, "n": 3, "tags": [1, 2], "d": {"x": 1}},
        {"uri": str(DEMO / "s08_oak.wav"), "speaker": None},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    rows = {r["uri"].rsplit("/", 1)[1]: r for r in list_source(str(tmp_path / "m.jsonl"))}
    meta = rows["s01_fox.wav"]["meta"]
    assert meta["speaker"] == "ann" and meta["ok"] == "true" and meta["n"] == "3"
    assert json.loads(meta["tags"]) == [1, 2] and json.loads(meta["d"]) == {"x": 1}
    assert "speaker" not in (rows["s08_oak.wav"]["meta"] or {})  # null: no entry, not ""


def test_named_paths_give_one_row_each_even_when_missing(tmp_path):
    (tmp_path / "dir.wav").mkdir()
    shutil.copy(FOX, tmp_path / "noext")
    (tmp_path / "take[1].wav").write_bytes(FOX.read_bytes())
    rows = list_named([str(FOX), str(tmp_path / "missing.wav"), str(tmp_path / "noext"),
                       str(tmp_path / "take[1].wav")])  # fmt: skip
    assert [r["list_error"]["kind"] if r["list_error"] else "ok" for r in rows] == [
        "ok", "not_found", "ok", "ok"
    ]  # fmt: skip


def test_output_of_another_job_is_refused_not_counted_as_done(tmp_path):
    scan = {"kind": "scan"}
    run = {"kind": "annotate", "model": "whisper:tiny.en", "tasks": [{"name": "asr"}]}
    claim_output(str(tmp_path), scan)
    claim_output(str(tmp_path), scan)  # the same job again: a resume
    with pytest.raises(JobError, match="holds rows of another job \\(a scan\\)"):
        claim_output(str(tmp_path), run)
    other = tmp_path / "o"
    claim_output(str(other), run)
    with pytest.raises(JobError, match="tasks asr, caption"):
        claim_output(str(other), {**run, "tasks": [{"name": "asr"}, {"name": "caption"}]})


def test_unreachable_ray_address_is_refused_with_the_reason():
    with pytest.raises(JobError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        check_reachable("127.0.0.1:1")
    with pytest.raises(JobError, match="must be host:port"):
        check_reachable("nohostport")


def test_storage_option_conflicts_are_errors():
    assert parse_storage_options(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    for items in (["a=1", "a.b=2"], ["a.b=2", "a=1"], ["foo"]):
        with pytest.raises(ValueError, match="storage option"):
            parse_storage_options(items)


@pytest.mark.parametrize(
    ("args", "spec_text", "words"),
    [
        (["--batch-size", "-5"], None, "model.batch_size"),
        (["--batch-size", "0"], None, "model.batch_size"),
        (["--model", "whisper:tiny.en"], "model: whisper\n", "model: must be a mapping"),
        (["--cpus", "2"], "resources: 4\n", "resources: must be a mapping"),
        ([], "model: {family: whisper\n", "is not valid YAML"),
        (["-S", "foo"], None, "must be written key=value"),
        (["-S", "a=1", "-S", "a.b=2"], None, "already given a value"),
    ],
)
def test_run_flags_and_specs_fail_with_a_message_not_a_traceback(tmp_path, args, spec_text, words):
    cmd = ["run", str(DEMO), "--out", str(tmp_path / "out"), *args]
    if spec_text is not None:
        (tmp_path / "job.yaml").write_text(spec_text)
        cmd += ["--spec", str(tmp_path / "job.yaml")]
    res = CliRunner().invoke(app, cmd)
    assert res.exit_code != 0
    assert words in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, TypeError)
    assert not os.path.exists(tmp_path / "out")  # refused before anything was made
