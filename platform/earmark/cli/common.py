"""The Typer app and consoles shared by the CLI modules (cli, cli_cluster, cli_serve)."""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    help="Annotate large audio archives with audio-language models on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # reflows docstring paragraphs in --help
)
console = Console(stderr=True)  # messages, progress, errors
out = Console()  # results (tables, JSON) on stdout


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print an error without a traceback and exit with `code`."""
    # soft wrap: a long path or URL in the message stays one piece (copy-paste, grep)
    console.print(f"[bold red]error:[/] {msg}", soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code)


def note(msg: str) -> None:
    """Print a one-line note to stderr as is (no markup; a long URL stays on one line)."""
    console.print(msg, soft_wrap=True, markup=False, highlight=False)


# model options shared by `run`, `annotate` and `bench` (None: not given, the spec's value holds)
LanguageOpt = Annotated[
    str | None, typer.Option(help="whisper: the audio's language, e.g. de (default: detected)")
]
MaxTokensOpt = Annotated[
    int | None, typer.Option(help="Generation limit per task (the model's default if unset)")
]
PackOpt = Annotated[
    bool | None,
    typer.Option(
        "--pack-windows/--no-pack-windows",
        help="whisper: pack short windows into shared 30-s inputs (default: on in jobs)",
    ),
]
MinSpeechOpt = Annotated[
    float | None,
    typer.Option(
        help="asr: windows with less speech than this (s, silero-vad) get no model time and an "
        "empty, no_speech transcript; 0 sends every window  [default: 0.25]"
    ),
]
DropFlaggedOpt = Annotated[
    bool | None,
    typer.Option(
        "--drop-flagged/--keep-flagged",
        help="asr: leave flagged segments' text (filler, repetition, ...) out of the transcript",
    ),
]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="hf (earmark's transformers code, the reference) or vllm (midashenglm, moss; "
        "needs `make vllm-env`)  [default: hf]",
    ),
]
WordsOpt = Annotated[
    bool | None,
    typer.Option(
        "--word-timestamps/--no-word-timestamps",
        help="whisper: word start/end times in each segment  [default: on]",
    ),
]
