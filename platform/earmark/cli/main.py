"""The earmark command line (Typer). Parsing and printing only; the work lives elsewhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from earmark.cli.common import (
    DropFlaggedOpt,
    EngineOpt,
    LanguageOpt,
    MaxTokensOpt,
    MinSpeechOpt,
    PackOpt,
    WordsOpt,
    app,
    console,
    out,
)
from earmark.cli.common import fail as _fail
from earmark.contracts.errors import validation_problems

SourceArg = Annotated[
    str, typer.Argument(help="Folder, bucket prefix, glob, or .parquet/.jsonl/.csv manifest")
]
TargetMbOpt = Annotated[
    float | None,
    typer.Option(help="Size of the committed output files, MB (default 128)"),
]
AudioColumnOpt = Annotated[
    str | None,
    typer.Option(help="Packed Parquet sources: the column holding the audio (default: by type)"),
]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="Output folder (local or s3://...)")]
StorageOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-S", help="fsspec storage option key=value (repeatable)"),
]


def _spec(**kw):
    """Build a JobSpec from a YAML spec and flag overrides; name the bad field on error."""
    from pydantic import ValidationError

    from earmark.contracts import JobSpec, ModelSpec

    spec_path = kw.pop("spec", None)
    model = kw.pop("model", None)
    # model options given as flags (None: not given), validated with the rest of the spec
    options = {k: v for k, v in (kw.pop("model_options", None) or {}).items() if v is not None}
    data = {k: v for k, v in kw.items() if v is not None}
    try:
        base = {}
        if spec_path:
            import yaml

            try:
                base = yaml.safe_load(Path(spec_path).read_text()) or {}
            except yaml.YAMLError as exc:
                _fail(f"{spec_path} is not valid YAML: {' '.join(str(exc).split())}")
            if not isinstance(base, dict):
                _fail(f"{spec_path}: a job spec must be a mapping")
        if model:
            m = ModelSpec.parse(model)
            base["model"] = {
                **_mapping(base, "model", spec_path),
                "family": m.family,
                "checkpoint": m.checkpoint,
            }
        if options:  # validated with the rest, so 0 or -5 is named, not ignored
            base["model"] = {**_mapping(base, "model", spec_path), **options}
        target_mb = data.pop("target_file_mb", None)
        if target_mb is not None:
            base["output_files"] = {
                **_mapping(base, "output_files", spec_path),
                "target_file_mb": target_mb,
            }
        resources = data.pop("resources", None)
        if resources:
            base["resources"] = {**_mapping(base, "resources", spec_path), **resources}
        base.update(data)
        return JobSpec.model_validate(base)
    except ValidationError as exc:
        _fail("invalid job spec:\n  " + "\n  ".join(validation_problems(exc.errors())))
    except (ValueError, OSError) as exc:
        _fail(str(exc))


def _mapping(base: dict, key: str, spec_path) -> dict:
    """The spec's `key` section, which a flag is about to extend; it must be a mapping."""
    value = base.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(f"invalid job spec:\n  {key}: must be a mapping, got {value!r} (in {spec_path})")
    return value


def _storage(items: list[str] | None) -> dict:
    from earmark.storage import parse_storage_options

    try:
        return parse_storage_options(items)
    except ValueError as exc:
        _fail(str(exc))


def _print_summary(summary) -> None:
    t = Table(title=f"job {summary.job_id}", show_header=False)
    for label, value in summary.table_rows():
        t.add_row(label, value)
    console.print(t)


def _retry_kinds(value: str | None) -> frozenset[str] | None:
    """`--retry-errors` alone: every kind; with a value: those kinds, each checked."""
    from earmark.contracts import ErrorKind

    if value is None:
        return None
    if value == RETRY_ALL:
        return frozenset()
    kinds = frozenset(k.strip() for k in value.split(",") if k.strip())
    unknown = sorted(kinds - {str(k) for k in ErrorKind})
    if unknown:
        _fail(
            f"--retry-errors: unknown error kind(s) {', '.join(unknown)}; known: "
            f"{', '.join(str(k) for k in ErrorKind)}"
        )
    return kinds


RETRY_ALL = "all"


def _run(
    spec, *, with_model: bool, address: str | None, retry_errors: frozenset[str] | None = None
) -> None:
    from earmark.batch.runner import run_job
    from earmark.cli.common import note
    from earmark.compute.address import resolve_run_address
    from earmark.contracts import JobError

    try:
        address = resolve_run_address(address, note=note)
        summary = run_job(
            spec,
            address=address,
            with_model=with_model,
            progress=True,
            retry_errors=retry_errors,
        )
    except JobError as exc:
        _fail(str(exc), code=1)
    _print_summary(summary)


@app.command()
def scan(
    source: SourceArg,
    out_: OutOpt,
    storage_option: StorageOpt = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    target_file_mb: TargetMbOpt = None,
    audio_column: AudioColumnOpt = None,
) -> None:
    """Inventory an archive: one Parquet row per file with codec, rate, channels, duration and
    status — the CPU half of `earmark run`, with no model."""
    spec = _spec(
        source=source,
        output=out_,
        target_file_mb=target_file_mb,
        audio_column=audio_column,
        storage_options=_storage(storage_option),
        resources={"cluster_cpus": cpus} if cpus else None,
    )
    _run(spec, with_model=False, address=address)


@app.command()
def run(
    source: Annotated[str | None, typer.Argument(help="Source (overrides the spec's)")] = None,
    out_: Annotated[str | None, typer.Option("--out", "-o", help="Output folder")] = None,
    tasks: Annotated[
        str | None, typer.Option(help='e.g. asr,caption,tags,mood="What mood?"')
    ] = None,
    model: Annotated[str | None, typer.Option(help="FAMILY or FAMILY:CHECKPOINT")] = None,
    spec: Annotated[Path | None, typer.Option(help="YAML job spec (flags override it)")] = None,
    storage_option: StorageOpt = None,
    batch_size: Annotated[int | None, typer.Option(help="Windows per model call")] = None,
    language: LanguageOpt = None,
    max_new_tokens: MaxTokensOpt = None,
    pack_windows: PackOpt = None,
    min_speech_s: MinSpeechOpt = None,
    drop_flagged: DropFlaggedOpt = None,
    word_timestamps: WordsOpt = None,
    engine: EngineOpt = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    target_file_mb: TargetMbOpt = None,
    audio_column: AudioColumnOpt = None,
    retry_errors: Annotated[
        str | None,
        typer.Option(
            "--retry-errors",
            flag_value=RETRY_ALL,
            is_flag=False,
            metavar="[KIND,...]",
            help="Annotate the output's error rows again (all, or these error kinds, e.g. "
            "model_crash,unreachable); each new row replaces its old one",
        ),
    ] = None,
) -> None:
    """Annotate an archive: decode, run the model on every file, write one Parquet row per file.
    Rerunning on the same output resumes where it stopped."""
    js = _spec(
        spec=spec,
        source=source,
        output=out_,
        tasks=tasks,
        model=model,
        model_options={
            "batch_size": batch_size,
            "language": language,
            "max_new_tokens": max_new_tokens,
            "pack_windows": pack_windows,
            "min_speech_s": min_speech_s,
            "drop_flagged": drop_flagged,
            "word_timestamps": word_timestamps,
            "engine": engine,
        },
        target_file_mb=target_file_mb,
        audio_column=audio_column,
        storage_options=_storage(storage_option) or None,
        resources={"cluster_cpus": cpus} if cpus else None,
    )
    _run(js, with_model=True, address=address, retry_errors=_retry_kinds(retry_errors))


@app.command()
def annotate(
    files: Annotated[list[Path], typer.Argument(help="Audio files")],
    model: Annotated[str, typer.Option(help="FAMILY or FAMILY:CHECKPOINT")] = "eureka",
    tasks: Annotated[str, typer.Option(help='asr,caption,tags or name="prompt"')] = "asr",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON row per file")] = False,
    max_new_tokens: MaxTokensOpt = None,
    language: LanguageOpt = None,
    pack_windows: PackOpt = None,
    min_speech_s: MinSpeechOpt = None,
    drop_flagged: DropFlaggedOpt = None,
    word_timestamps: WordsOpt = None,
    engine: EngineOpt = None,
) -> None:
    """Annotate a few local files right here, without Ray."""
    from earmark.annotate.local import annotate_files
    from earmark.contracts import JobError, ModelSpec, parse_tasks

    try:
        given = {
            "max_new_tokens": max_new_tokens,
            "language": language,
            "pack_windows": pack_windows,
            "min_speech_s": min_speech_s,
            "drop_flagged": drop_flagged,
            "word_timestamps": word_timestamps,
            "engine": engine,
        }
        extra = {k: v for k, v in given.items() if v is not None}
        spec = ModelSpec.parse(model, **extra)
        task_list = parse_tasks(tasks)
        rows = annotate_files([str(f) for f in files], spec, task_list)
    except (JobError, ValueError) as exc:
        _fail(str(exc), code=1)
    for row in rows:
        if as_json:
            out.print_json(json.dumps(row, default=str), indent=None)
            continue
        t = Table(title=row["uri"], show_header=False, title_justify="left")
        shown = ("status", "error", "duration_s", "speech_s", "language", "flags")
        for k in (*shown, "transcript", "caption", "tags"):
            if row.get(k) not in (None, []):
                t.add_row(k, str(row[k]))
        for a in row.get("answers") or []:
            t.add_row(a["name"], a["text"])
        out.print(t)
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)


# the other command groups register themselves on `app` when imported
from earmark.cli import bench, cluster, info, serve  # noqa: E402, F401
from earmark.cli.results import register as _register_results  # noqa: E402

_register_results(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
