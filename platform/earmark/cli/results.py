"""`earmark eval` and `earmark report`: judge an annotation run (registered on the main app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("report")(report_cmd)
    app.command("compact")(compact_cmd)


def compact_cmd(
    output: Annotated[str, typer.Argument(help="Output folder of `earmark run` or `scan`")],
    target_file_mb: Annotated[
        float, typer.Option(help="Size of the files to fold into, MB")
    ] = 128.0,
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", "-S", help="key=value")
    ] = None,
) -> None:
    """Fold an output's small files into right-sized ones (exactly once: every fold is
    journaled, and a compaction that is killed is finished by the next earmark command on the
    output), then keep one row per file. Do not run it while a job writes to the output."""
    from earmark.contracts import JobError
    from earmark.sink.commit import compact_output
    from earmark.sink.repair import repair_output
    from earmark.storage import Location, parse_storage_options

    try:
        out = Location(output, parse_storage_options(storage_option))
        if target_file_mb <= 0:
            raise ValueError(f"--target-file-mb must be positive, got {target_file_mb}")
        got = compact_output(out, int(target_file_mb * (1 << 20)))
        fixed = repair_output(out)
    except (JobError, ValueError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    removed = fixed["duplicates"] + fixed["superseded"]
    print(
        f"{output}: {got.files_before} files → {got.files_after}, {fixed['rows']} rows "
        f"({got.folds} folds; {removed} duplicate or superseded rows removed)"
    )


def eval_cmd(
    references: Annotated[
        str,
        typer.Option(
            "--references", "-r", help="Manifest with uri/audio_id + text/labels/caption/answer"
        ),
    ],
    output: Annotated[
        str | None, typer.Argument(help="Output folder of `earmark run` (or use --predictions)")
    ] = None,
    predictions: Annotated[
        str | None,
        typer.Option(
            "--predictions",
            "-p",
            help="Score this .jsonl/.csv/.parquet of predictions made elsewhere (a `uri` column "
            "and a `text` column, or `transcript`/`caption`/`tags`/`answer`) instead of OUTPUT",
        ),
    ] = None,
    output_base: Annotated[
        str | None,
        typer.Option(
            "--output-base",
            help="Folder that relative uris of the output or predictions are relative to "
            "(without it such uris are refused)",
        ),
    ] = None,
    answer_task: Annotated[
        str | None,
        typer.Option(help="Custom answer scored against `answer` (default: each row's first)"),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the result here")
    ] = None,
    fail_above: Annotated[
        list[str] | None,
        typer.Option("--fail-above", help="Threshold like wer=0.2 or map>=0.3 (repeatable)"),
    ] = None,
    language: Annotated[str, typer.Option(help="Language of rows without one")] = "en",
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", "-S", help="key=value")
    ] = None,
) -> None:
    """Score an output (or a predictions file) against references: WER/CER per language, tag
    mAP and accuracy, caption and answer similarity, multiple-choice accuracy. Exits 1 when a
    --fail-above threshold is crossed, 2 on bad input or any other failure (with a message,
    never a traceback)."""
    from earmark.contracts import JobError
    from earmark.evaluation import (
        check_thresholds,
        evaluate,
        evaluate_predictions,
        print_result,
        write_json,
    )
    from earmark.storage import Location, parse_storage_options

    try:
        if (output is None) == (predictions is None):
            raise ValueError(
                "give either an OUTPUT folder of `earmark run` or --predictions FILE, not "
                + ("both" if output else "neither")
            )
        opts = parse_storage_options(storage_option)
        refs = Location(references, opts)
        if predictions is not None:
            result = evaluate_predictions(
                Location(predictions, opts), refs, default_language=language,
                output_base=output_base,
            )  # fmt: skip
        else:
            result = evaluate(
                Location(str(output), opts), refs, default_language=language,
                answer_task=answer_task, output_base=output_base,
            )  # fmt: skip
        violations = check_thresholds(result, list(fail_above or []))
        print_result(result)
        if json_out:
            write_json(result, str(json_out))
    except (JobError, ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:  # a crash is not a crossed threshold (exit 1): say what broke
        console.print(f"[bold red]error:[/] earmark eval failed: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from None
    for v in violations:
        console.print(f"[bold red]threshold crossed:[/] {v}")
    if violations:
        raise typer.Exit(1)


def report_cmd(
    output: Annotated[str, typer.Argument(help="Output folder of `earmark run` or `earmark scan`")],
    html: Annotated[Path, typer.Option("--html", help="Where to write the report")] = Path(
        "report.html"
    ),
    storage_option: Annotated[
        list[str] | None, typer.Option("--storage-option", "-S", help="key=value")
    ] = None,
) -> None:
    """Write one self-contained HTML report (plots, error breakdown, sample rows with players)."""
    from earmark.contracts import JobError
    from earmark.report import render_report
    from earmark.storage import Location, parse_storage_options

    try:
        path = render_report(Location(output, parse_storage_options(storage_option)), html)
    except (JobError, ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    console.print(f"report written to {path}")
