"""`earmark eval` and `earmark report` on a real `earmark run` output of the demo corpus."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from earmark.batch.runner import run_job
from earmark.cli import app
from earmark.contracts import JobSpec
from paths import DEMO

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    spec = JobSpec(source=str(DEMO / "manifest.jsonl"), output=str(out),
                   model={"family": "whisper", "checkpoint": "tiny.en"})  # fmt: skip
    run_job(spec, progress=False)
    return out


def test_eval_cli_scores_real_run(demo_output, tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "eval",
            str(demo_output),
            "-r",
            str(DEMO / "manifest.jsonl"),
            "--json",
            str(tmp_path / "e.json"),
            "--fail-above",
            "wer=0.2",
        ],  # fmt: skip
    )
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "e.json").read_text())
    assert 0 <= result["asr"]["wer"] < 0.1  # tiny.en on the generated speech
    assert result["asr"]["words"]["n_empty_ref"] == 2  # the two non-speech clips, counted
    assert result["coverage"]["n_matched"] == 14
    # a threshold the measured WER does not meet fails the command, for CI use (exit 1)
    need = f"wer>={result['asr']['wer'] + 0.01:.4f}"
    strict = CliRunner().invoke(
        app, ["eval", str(demo_output), "-r", str(DEMO / "manifest.jsonl"), "--fail-above", need]
    )
    assert strict.exit_code == 1 and "threshold" in strict.output


def test_report_cli_writes_self_contained_html(demo_output, tmp_path):
    html = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(demo_output), "--html", str(html)])
    assert res.exit_code == 0, res.output
    page = html.read_text()
    for element in ("plot-duration", "plot-status", "plot-codec", "table-samples", "<audio"):
        assert element in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing fetched from outside
