"""`earmark annotate` (no Ray): a real transcript with whisper, every task on each stand-in."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from earmark.cli import app
from paths import DEMO

FOX = "The quick brown fox jumps over the lazy dog near the river bank."
FOX_PATH = DEMO / "s01_fox.wav"


def _json_rows(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_annotate_whisper_prints_real_transcript():
    res = CliRunner().invoke(app, ["annotate", str(DEMO / "s01_fox.wav"), "--model", "whisper",
                                   "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    (row,) = _json_rows(res.output)
    assert row["status"] == "ok" and row["transcript"] == FOX
    assert row["segments"][0]["end_s"] == pytest.approx(row["duration_s"], abs=0.01)
    plain = CliRunner().invoke(app, ["annotate", str(DEMO / "s01_fox.wav"), "--model", "whisper"])
    assert "quick brown fox" in plain.output


@pytest.mark.parametrize("family", ["eureka", "midashenglm", "moss"])
def test_annotate_stand_in_all_tasks(family, tmp_path):
    from earmark.testing.tiny import build_tiny_checkpoint

    ckpt = build_tiny_checkpoint(family, tmp_path / family)
    files = [str(DEMO / "s01_fox.wav"), str(DEMO / "n01_sweep.flac")]
    tasks = 'asr,caption,tags,mood="What mood is this?"'
    args = ["annotate", *files, "--model", f"{family}:{ckpt}", "--tasks", tasks, "--json"]
    args += ["--max-new-tokens", "8"]  # 8 tokens prove what 256 would, 30× sooner
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = _json_rows(res.output)
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert isinstance(row["transcript"], str) and isinstance(row["caption"], str)
        assert isinstance(row["tags"], list) and [a["name"] for a in row["answers"]] == ["mood"]
        assert row["model"] == f"{family}:{ckpt}"


def test_annotate_bad_inputs_are_clear(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    res = CliRunner().invoke(app, ["annotate", str(bad), "--model", "whisper", "--json"])
    assert res.exit_code == 1
    (row,) = _json_rows(res.output)
    assert row["status"] == "error" and row["error_kind"] == "corrupt"
    res = CliRunner().invoke(app, ["annotate", str(bad), "--model", "whisper:/nope"])
    assert res.exit_code == 1 and "/nope" in res.output
    res = CliRunner().invoke(
        app, ["annotate", str(bad), "--model", "whisper", "--tasks", "caption"]
    )
    assert res.exit_code == 1 and "cannot do task 'caption'" in res.output


def test_annotate_gives_one_row_per_named_path(tmp_path):
    """A missing file is an error row beside the others, not the end of the command; a file
    named explicitly is read whatever its extension."""
    noext = tmp_path / "fox_without_extension"
    noext.write_bytes(FOX_PATH.read_bytes())
    missing = tmp_path / "missing.wav"
    args = ["annotate", str(FOX_PATH), str(missing), str(noext), "--model", "whisper", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output  # one file failed
    rows = _json_rows(res.output)
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[1]["error_kind"] == "not_found" and "missing.wav" in rows[1]["error"]
    assert rows[2]["transcript"] == FOX
