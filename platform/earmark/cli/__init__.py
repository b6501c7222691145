"""The Typer CLI: parse, call, print. `earmark = earmark.cli:app`."""

from earmark.cli.main import app

__all__ = ["app"]
