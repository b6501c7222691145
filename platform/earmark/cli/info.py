"""`earmark models list`, `earmark schemas export`, `earmark version`: what this earmark is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from earmark import __version__
from earmark.cli.common import app, out

models_app = typer.Typer(help="Model families earmark can run.", no_args_is_help=True)
schemas_app = typer.Typer(help="Contract snapshots (JSON Schema, Arrow).", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(schemas_app, name="schemas")


@models_app.command("list")
def models_list() -> None:
    """Families, default checkpoints, window length, audio tokens per second, engines."""
    from earmark.contracts import FAMILIES

    t = Table(
        "family", "default checkpoint", "window", "audio tokens/s", "tasks", "engines",
        expand=False,
    )  # fmt: skip
    t.columns[1].no_wrap = True
    for info in FAMILIES.values():
        tps = "—" if info.audio_tokens_per_s is None else f"{info.audio_tokens_per_s:g}"
        t.add_row(
            info.name,
            info.default_checkpoint,
            f"{info.window_s:g} s",
            tps,
            ", ".join(info.tasks),
            ", ".join(info.engines),
        )
    out.print(t)


@schemas_app.command("export")
def schemas_export(
    folder: Annotated[Path, typer.Argument(help="Where to write")] = Path("schemas"),
) -> None:
    """Write JSON Schema (job spec, row) and the output's Arrow schema."""
    from earmark.contracts.snapshots import export

    for p in export(folder):
        out.print(str(p))


@app.command()
def version() -> None:
    """Print the earmark version."""
    out.print(__version__)
