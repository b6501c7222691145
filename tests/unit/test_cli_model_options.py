"""Family options reach the job spec from the CLI as from YAML and the Serve config, validated
with the rest of the spec (a bad value is named, never ignored)."""

from __future__ import annotations

from typer.testing import CliRunner

from earmark.cli import app
from earmark.cli.main import _spec


def test_model_flags_land_in_the_job_spec(tmp_path):
    spec = _spec(
        source=str(tmp_path), output=str(tmp_path / "out"), model="whisper",
        model_options={"max_new_tokens": 64, "pack_windows": False, "language": "de",
                       "batch_size": None},
    )  # fmt: skip
    m = spec.model
    assert (m.max_new_tokens, m.pack_windows, m.language) == (64, False, "de")
    assert m.batch_size == type(m).model_fields["batch_size"].default  # a flag not given


def test_bad_model_flags_are_named_before_any_work(tmp_path):
    runner = CliRunner()
    args = ["run", str(tmp_path), "--out", str(tmp_path / "out"), "--model", "whisper"]
    bad = runner.invoke(app, [*args, "--max-new-tokens", "0"])
    assert bad.exit_code == 2 and "max_new_tokens" in bad.output
    # a family that cannot take an option refuses it by name
    lang = runner.invoke(app, ["run", str(tmp_path), "--out", str(tmp_path / "o2"),
                               "--model", "eureka", "--language", "de"])  # fmt: skip
    assert lang.exit_code == 2 and "language" in lang.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "o2").exists()
