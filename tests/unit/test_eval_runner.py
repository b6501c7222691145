"""evaluate(): matching references to output rows, coverage counts, thresholds, JSON, printing."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from earmark.contracts import JobError, rows_to_table  # noqa: E402
from earmark.evaluation import check_thresholds, evaluate, parse_threshold, print_result, write_json
from earmark.evaluation.reading import canonical_uri  # noqa: E402

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _row(audio_dir: Path, name: str, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "audio_id": f"id-{name}",
        "uri": f"file://{audio_dir / name}",
        "status": "ok",
        "created_at": T0,
    }
    row.update(kw)
    return row


@pytest.fixture()
def run_dir(tmp_path: Path) -> tuple[Path, Path]:
    """An output directory (two Parquet parts + a marker file) and its audio folder."""
    audio = tmp_path / "corpus" / "audio"
    out = tmp_path / "out"
    (out / "part").mkdir(parents=True)
    audio.mkdir(parents=True)
    rows1 = [
        _row(audio, "a.wav", transcript="The cat sat on the mat."),
        _row(audio, "b.wav", transcript="hello world", tags=["dog", "cat"], tags_raw="dog; cat"),
        # b.wav again from an earlier failed attempt: the ok row must win.
        _row(
            audio,
            "b.wav",
            status="error",
            error_kind="corrupt",
            error_stage="decode",
            created_at=T0 - dt.timedelta(hours=1),
        ),
        _row(audio, "c.wav", status="error", error_kind="truncated", error_stage="decode"),
    ]
    rows2 = [
        _row(audio, "d.wav", transcript="", caption="A dog barks twice."),
        _row(
            audio,
            "e.wav",
            transcript="你好世界",
            answers=[{"name": "mood", "prompt": "Mood?", "text": "calm and quiet"}],
        ),
        _row(audio, "unref.wav", transcript="nobody asked"),
    ]
    pq.write_table(rows_to_table(rows1), out / "part-0.parquet")
    pq.write_table(rows_to_table(rows2), out / "part" / "part-1.parquet")
    (out / "_SUCCESS").write_text("")
    (out / "summary.json").write_text("{}")
    return out, audio


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_evaluate_matches_counts_and_scores(run_dir: tuple[Path, Path]) -> None:
    out, audio = run_dir
    manifest = audio.parent / "refs.jsonl"
    _write_jsonl(
        manifest,
        [
            {"uri": "audio/a.wav", "text": "the cat sat on a mat"},  # relative to the manifest
            {"audio_id": "id-b.wav", "text": "Hello, world!", "labels": ["dog"]},
            {"uri": str(audio / "c.wav"), "text": "anything"},  # error row
            {"uri": f"file://{audio}/d.wav", "text": "two words", "caption": "a dog barking"},
            {"uri": "audio/e.wav", "text": "你好世界", "language": "zh", "answer": "calm"},
            {"uri": "audio/missing.wav", "text": "never decoded"},
        ],
    )
    result = evaluate(str(out), str(manifest))
    cov = result.coverage
    assert cov.match_key == "audio_id+uri"
    assert (cov.n_references, cov.n_matched, cov.n_missing) == (6, 5, 1)
    assert (cov.n_ok, cov.n_error, cov.n_skipped) == (4, 1, 0)
    assert cov.error_kinds == {"truncated": 1}
    assert cov.n_duplicate_outputs == 1 and cov.n_output_rows == 6
    assert cov.n_unreferenced == 1
    assert cov.error_rate == pytest.approx(1 / 5)
    assert cov.missing_rate == pytest.approx(1 / 6)

    asr = result.asr
    assert asr is not None
    en = asr.per_language["en"]
    # a: 1 substitution / 6; b: 0 / 2; d: empty hypothesis → 2 deletions / 2.
    assert (en.n_pairs, en.n_empty_hyp, en.ref_tokens) == (3, 1, 10)
    assert asr.wer == pytest.approx(3 / 10)
    assert en.rate_both_nonempty == pytest.approx(1 / 8)
    assert asr.cer == 0.0 and asr.per_language["zh"].n_pairs == 1

    # Only b has labels in its reference column; other matched ok rows count as empty refs.
    assert result.tags is not None
    assert result.tags.n_rows == 4 and result.tags.n_empty_ref == 3
    assert result.tags.map == pytest.approx(1.0) and result.tags.accuracy == 1.0
    assert result.caption is not None and result.caption.n_scored == 1
    assert result.answer is not None and result.answer.n_scored == 1
    assert result.answer.token_f1 == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))

    metrics = result.metrics()
    assert metrics["wer"] == pytest.approx(0.3) and metrics["cer.zh"] == 0.0
    assert metrics["empty_hyp_rate"] == pytest.approx(1 / 4)


def test_thresholds(run_dir: tuple[Path, Path]) -> None:
    out, audio = run_dir
    manifest = audio.parent / "refs.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["uri", "text"])
        w.writeheader()
        w.writerow({"uri": "audio/a.wav", "text": "the cat sat on a mat"})
    result = evaluate(str(out), str(manifest))
    assert result.asr is not None and result.asr.wer == pytest.approx(1 / 6)
    assert check_thresholds(result, ["wer=0.2", "wer<=0.5", "error_rate=0"]) == []
    violations = check_thresholds(result, ["wer=0.1", "wer.en>=0.5", "cer=0.5", "map>=0.1"])
    assert len(violations) == 4
    assert "above 0.1" in violations[0] and "below 0.5" in violations[1]
    assert "cer was not computed" in violations[2] and "map was not computed" in violations[3]
    with pytest.raises(ValueError, match="unknown metric"):
        check_thresholds(result, ["bogus=1"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_threshold("wer>0.2")
    assert parse_threshold(" WER = 0.25 ") == ("wer", "<=", 0.25)


def test_json_and_table_output(run_dir: tuple[Path, Path], tmp_path: Path) -> None:
    from rich.console import Console

    out, audio = run_dir
    manifest = audio.parent / "refs.jsonl"
    _write_jsonl(
        manifest,
        [
            {"uri": "audio/a.wav", "text": "the dog sat on a mat", "labels": "cat"},
            {"uri": "audio/e.wav", "text": "你好世界", "language": "zh"},
        ],
    )
    result = evaluate(str(out), str(manifest))
    path = tmp_path / "reports" / "eval.json"
    write_json(result, str(path))
    data = json.loads(path.read_text())
    assert data["asr"]["wer"] == pytest.approx(2 / 6)
    assert data["coverage"]["n_matched"] == 2
    assert data["asr"]["worst"][0]["reference"] == "the dog sat on a mat"

    console = Console(record=True, width=200)
    print_result(result, console=console)
    text = console.export_text()
    for expected in ("Coverage", "WER", "CER", "33.33%", "Tagging", "Highest-error rows"):
        assert expected in text


def test_bad_inputs_raise_job_errors(tmp_path: Path, run_dir: tuple[Path, Path]) -> None:
    out, audio = run_dir
    refs = tmp_path / "r.jsonl"
    with pytest.raises(JobError, match="does not exist"):
        evaluate(str(out), str(refs))
    _write_jsonl(refs, [{"uri": "x.wav", "text": "a"}])
    (tmp_path / "empty-out").mkdir()
    with pytest.raises(JobError, match="no Parquet files"):
        evaluate(str(tmp_path / "empty-out"), str(refs))
    with pytest.raises(JobError, match="does not exist"):
        evaluate(str(tmp_path / "nope"), str(refs))
    _write_jsonl(refs, [{"path": "x.wav", "text": "a"}])
    with pytest.raises(JobError, match="`uri` or `audio_id`"):
        evaluate(str(out), str(refs))
    _write_jsonl(refs, [{"uri": "x.wav", "notes": "a"}])
    with pytest.raises(JobError, match="none of the columns"):
        evaluate(str(out), str(refs))
    # a Parquet file that is not an earmark output (no status): refused, not scored as errors
    _write_jsonl(refs, [{"uri": "x.wav", "text": "a"}])
    (tmp_path / "other").mkdir()
    import pyarrow as pa

    pq.write_table(pa.table({"uri": ["x.wav"], "text": ["a"]}), tmp_path / "other" / "p.parquet")
    with pytest.raises(JobError, match=r"p\.parquet has no 'status' column"):
        evaluate(str(tmp_path / "other"), str(refs))
    # ... also when it sits beside earmark's own files (only the first footer is read)
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    pq.write_table(pa.table({"uri": [str(audio / "x.wav")]}), mixed / "zz-foreign.parquet")
    _write_jsonl(refs, [{"uri": str(audio / "x.wav"), "text": "a"}])
    with pytest.raises(JobError, match="holds a Parquet file earmark did not write"):
        evaluate(str(mixed), str(refs))
    # one file named twice (here as a relative and a ./ path): refused with both rows
    _write_jsonl(refs, [{"uri": "x.wav", "text": "a"}, {"uri": "y.wav", "text": "b"},
                        {"uri": "./x.wav", "text": "c"}])  # fmt: skip
    with pytest.raises(JobError, match=r"r\.jsonl: rows 1 and 3 name the same file"):
        evaluate(str(out), str(refs))


def test_canonical_uri() -> None:
    assert canonical_uri("file:///data/x/../a.wav") == "/data/a.wav"
    assert canonical_uri("a.wav", base="/data/set") == "/data/set/a.wav"
    assert canonical_uri("sub/a.wav", base="s3://bucket/set") == "s3://bucket/set/sub/a.wav"
    assert canonical_uri("s3://bucket/a.wav") == "s3://bucket/a.wav"
    assert canonical_uri("memory:///b/x/./a.wav") == canonical_uri("a.wav", base="memory://b/x/")
    assert canonical_uri("a.wav", base="file:///data") == "/data/a.wav"


def test_remote_output_and_manifest_through_fsspec() -> None:
    """Any fsspec URL works (memory:// here): relative reference URIs join the manifest's URL."""
    import io
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/bucket-{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    rows = [{"audio_id": "a", "uri": f"memory://{root}/audio/a.wav", "status": "ok",
             "transcript": "hi there"}]  # fmt: skip
    pq.write_table(rows_to_table(rows), buf)
    fs.pipe(f"{root}/out/part-0.parquet", buf.getvalue())
    fs.pipe(f"{root}/refs.jsonl", json.dumps({"uri": "audio/a.wav", "text": "Hi there!"}).encode())
    result = evaluate(f"memory://{root}/out", f"memory://{root}/refs.jsonl")
    assert result.coverage.n_matched == 1
    assert result.asr is not None and result.asr.wer == 0.0


def test_eval_exit_codes_tell_a_crash_from_a_crossed_threshold(tmp_path, monkeypatch):
    """Bad input and crashes exit 2 with a message and no traceback; only a threshold exits 1."""
    from typer.testing import CliRunner

    import earmark.evaluation as ev
    from earmark.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["eval", str(tmp_path / "nope"), "-r", str(tmp_path / "r.jsonl")])
    assert missing.exit_code == 2 and "error:" in missing.output
    assert "Traceback" not in missing.output

    def broken(*a, **kw):
        raise KeyError("status")

    monkeypatch.setattr(ev, "evaluate", broken)
    crash = runner.invoke(app, ["eval", str(tmp_path), "-r", str(tmp_path / "r.jsonl")])
    assert crash.exit_code == 2, crash.output
    assert "earmark eval failed: KeyError" in crash.output and "Traceback" not in crash.output


def test_relative_output_uris_need_a_stated_base(tmp_path: Path, monkeypatch) -> None:
    """A job run from another folder wrote "data/a.wav": refused without --output-base (naming
    the file and row), matched against the base when one is given; never silently unmatched."""
    job_dir = tmp_path / "job"
    (job_dir / "data").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    rows = [
        {"audio_id": "x", "uri": str(job_dir / "data" / "b.wav"), "status": "ok",
         "transcript": "good morning"},
        {"audio_id": "a", "uri": "data/a.wav", "status": "ok", "transcript": "hello world"},
    ]  # fmt: skip
    pq.write_table(rows_to_table(rows), out / "part-0.parquet")
    manifest = job_dir / "refs.jsonl"
    _write_jsonl(
        manifest,
        [
            {"uri": "data/a.wav", "text": "hello world"},  # relative to the manifest
            {"uri": str(job_dir / "data" / "b.wav"), "text": "good morning"},
        ],
    )
    # eval runs in another folder: resolving "data/a.wav" there would silently match nothing
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobError, match=r"part-0\.parquet: row 2: uri 'data/a.wav' is relative"):
        evaluate(str(out), str(manifest))
    with pytest.raises(JobError, match="--output-base DIR"):
        evaluate(str(out), str(manifest))
    result = evaluate(str(out), str(manifest), output_base=str(job_dir))
    assert result.coverage.n_matched == 2 and result.coverage.n_missing == 0
    assert result.asr is not None and result.asr.wer == 0.0
    # a base given relative to where eval runs works the same
    assert evaluate(str(out), str(manifest), output_base="job").coverage.n_matched == 2
    # matching by audio_id never looks at uris: no refusal needed
    _write_jsonl(manifest, [{"audio_id": "a", "text": "hello world"}])
    assert evaluate(str(out), str(manifest)).coverage.n_matched == 1


def test_eval_cli_output_base(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from earmark.cli import app

    out = tmp_path / "out"
    out.mkdir()
    rows = [{"audio_id": "a", "uri": "a.wav", "status": "ok", "transcript": "hi"}]
    pq.write_table(rows_to_table(rows), out / "part-0.parquet")
    manifest = tmp_path / "refs.jsonl"
    _write_jsonl(manifest, [{"uri": "a.wav", "text": "hi"}])
    runner = CliRunner()
    refused = runner.invoke(app, ["eval", str(out), "-r", str(manifest)])
    assert refused.exit_code == 2 and "--output-base" in refused.output
    assert "Traceback" not in refused.output
    ok = runner.invoke(app, ["eval", str(out), "-r", str(manifest), "--output-base",
                             str(tmp_path), "--fail-above", "wer=0"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
