"""`earmark eval --predictions FILE`: score predictions made outside earmark, end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from earmark.cli import app
from earmark.contracts import JobError
from earmark.evaluation import evaluate_predictions


@pytest.fixture()
def refs(tmp_path: Path) -> Path:
    path = tmp_path / "refs.jsonl"
    rows = [
        {"uri": "audio/a.wav", "text": "the cat sat on the mat", "labels": "Speech, Music"},
        {"uri": "audio/b.wav", "text": "hello world", "labels": "Music"},
        {"uri": "audio/c.wav", "text": "你好世界", "language": "zh"},
        {"uri": "audio/d.wav", "text": "never predicted"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


def _flat(text: str) -> str:
    """CLI output without the terminal's line wrapping."""
    return " ".join(text.split())


def test_jsonl_predictions_end_to_end(tmp_path: Path, refs: Path) -> None:
    audio = tmp_path / "audio"
    preds = tmp_path / "preds.jsonl"
    rows = [
        {"uri": str(audio / "a.wav"), "text": "The cat sat on a mat."},  # 1 error / 6
        {"uri": f"file://{audio}/b.wav", "text": "Hello, world!"},
        {"uri": str(audio / "c.wav"), "text": "你好世界"},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_json = tmp_path / "e.json"
    res = _invoke("--predictions", str(preds), "-r", str(refs), "--json", str(out_json))
    assert res.exit_code == 0, res.output
    assert "columns scored: asr ← `text`, tags ← `text`" in _flat(res.output)  # which column
    data = json.loads(out_json.read_text())
    assert data["source"] == "predictions"
    assert data["prediction_columns"] == {"asr": "text", "tags": "text"}
    assert data["coverage"]["n_matched"] == 3 and data["coverage"]["n_missing"] == 1
    assert data["asr"]["wer"] == pytest.approx(1 / 8) and data["asr"]["cer"] == 0.0
    # same exit codes as an output folder: a crossed threshold exits 1
    strict = _invoke("--predictions", str(preds), "-r", str(refs), "--fail-above", "wer=0.01")
    assert strict.exit_code == 1 and "threshold crossed" in strict.output


def test_csv_predictions_with_named_columns(tmp_path: Path, refs: Path) -> None:
    preds = tmp_path / "preds.csv"
    with open(preds, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["uri", "transcript", "tags", "notes"])
        w.writeheader()
        w.writerow({"uri": "audio/a.wav", "transcript": "the cat sat on the mat",
                    "tags": "Speech; Music", "notes": "x"})  # fmt: skip
        w.writerow({"uri": "audio/b.wav", "transcript": "hello world", "tags": '["Music"]'})
    out_json = tmp_path / "e.json"
    # relative uris, like the manifest's: resolved against the stated base
    res = _invoke(
        *("-p", str(preds), "-r", str(refs), "--output-base", str(tmp_path)),
        *("--json", str(out_json), "--fail-above", "wer=0", "--fail-above", "map>=1"),
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out_json.read_text())
    assert data["prediction_columns"] == {"asr": "transcript", "tags": "tags"}
    assert data["asr"]["wer"] == 0.0 and data["tags"]["map"] == 1.0
    # without the base the relative uris are refused, naming the file and row (exit 2)
    refused = _invoke("-p", str(preds), "-r", str(refs))
    assert refused.exit_code == 2, refused.output
    assert "preds.csv: row 1: uri 'audio/a.wav' is relative" in _flat(refused.output)


def test_parquet_predictions(tmp_path: Path, refs: Path) -> None:
    preds = tmp_path / "p.parquet"
    pq.write_table(pa.table({"uri": [str(tmp_path / "audio/b.wav")], "text": ["hello world"],
                             "tags": [["music"]]}), preds)  # fmt: skip
    result = evaluate_predictions(str(preds), str(refs))
    assert result.coverage.n_matched == 1 and result.asr is not None and result.asr.wer == 0.0
    assert result.prediction_columns == {"asr": "text", "tags": "tags"}
    assert result.tags is not None and result.tags.recall == 1.0


def test_bad_predictions_files_exit_2_with_the_columns_found(tmp_path: Path, refs: Path) -> None:
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"path": "a.wav", "text": "hi"}) + "\n")
    res = _invoke("-p", str(preds), "-r", str(refs))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "preds.jsonl has no `uri` column (columns found: path, text)" in _flat(res.output)
    preds.write_text(json.dumps({"uri": "/a.wav", "hypothesis": "hi"}) + "\n")
    res = _invoke("-p", str(preds), "-r", str(refs))
    assert res.exit_code == 2
    assert "no `text` column (columns found: hypothesis, uri)" in _flat(res.output)
    preds.write_text("".join(json.dumps({"uri": "/a.wav", "text": t}) + "\n" for t in "ab"))
    with pytest.raises(JobError, match="rows 1 and 2 are both for /a.wav"):
        evaluate_predictions(str(preds), str(refs))
    assert _invoke("-p", str(tmp_path / "nope.csv"), "-r", str(refs)).exit_code == 2
    both = _invoke(str(tmp_path), "-p", str(preds), "-r", str(refs))
    assert both.exit_code == 2 and "not both" in _flat(both.output)
    neither = _invoke("-r", str(refs))
    assert neither.exit_code == 2 and "not neither" in _flat(neither.output)
    # a file with text for none of the tasks the references score
    preds.write_text(json.dumps({"uri": "/a.wav", "caption": "a dog"}) + "\n")
    res = _invoke("-p", str(preds), "-r", str(refs))
    assert res.exit_code == 2
    assert "no column for what the references score (text, labels)" in _flat(res.output)
