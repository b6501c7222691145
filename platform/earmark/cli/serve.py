"""CLI: the online endpoint (`earmark serve`, `earmark query`); benchmarks are in cli/bench.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from earmark.cli.common import app, console, out
from earmark.cli.common import fail as _fail
from earmark.contracts.errors import validation_problems

# ---------------------------------------------------------------------------------------------
# Online endpoint (Ray Serve): `earmark serve`, `earmark query`; the work is in earmark.serve
# ---------------------------------------------------------------------------------------------

ServeConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Serve spec or serve_app/*.yaml config")
]
ServeModelOpt = Annotated[
    str | None, typer.Option("--model", help="FAMILY or FAMILY:CHECKPOINT (overrides config)")
]


def _serve_spec(config: Path | None, model: str | None, cpus: int | None):
    """A ServeSpec from a config file and flag overrides; name the bad field on error."""
    from pydantic import ValidationError

    from earmark.contracts import ModelSpec
    from earmark.serve.config import ServeSpec

    try:
        data = ServeSpec.from_yaml(config).model_dump() if config else {}
        if model:
            m = ModelSpec.parse(model)
            data["model"] = {**data.get("model", {}), "family": m.family}
            data["model"]["checkpoint"] = m.checkpoint
        if cpus:
            data.setdefault("resources", {})["cluster_cpus"] = cpus
        return ServeSpec.model_validate(data)
    except ValidationError as exc:
        _fail("invalid serve spec:\n  " + "\n  ".join(validation_problems(exc.errors())))
    except (ValueError, OSError) as exc:
        _fail(str(exc))


@app.command("serve")
def serve_cmd(
    model: ServeModelOpt = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on  [default: 127.0.0.1, or the running Serve's]"),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="HTTP port  [default: 8000, or the running Serve's]")
    ] = None,
    config: ServeConfigOpt = None,
    cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address")] = None,
    replace: Annotated[
        bool, typer.Option(help="Replace an app of the same name already on the cluster")
    ] = False,
) -> None:
    """Serve the model over HTTP until Ctrl-C: POST /v1/annotate, the OpenAI-compatible
    /v1/audio/transcriptions, GET /v1/models, /healthz. EARMARK_API_KEY, when set, is the
    bearer token every route but /healthz requires. On a cluster (--address), Ctrl-C deletes
    the app, and shuts Serve down only if this command started it and no other app runs."""
    from earmark.contracts import JobError
    from earmark.serve.run import run_until_stopped

    spec = _serve_spec(config, model, cpus)

    def ready(url: str) -> None:
        console.print(f"earmark serving {spec.model_id} at {url} (Ctrl-C stops)")

    try:
        run_until_stopped(spec, host, port, address=address, replace=replace, on_ready=ready,
                          log=console.print)  # fmt: skip
    except JobError as exc:
        _fail(str(exc), code=1)
    console.print("stopped")


@app.command()
def query(
    file: Annotated[str, typer.Argument(help="Audio file, or an s3://... / https://... URL")],
    url: Annotated[
        str, typer.Option(envvar="EARMARK_URL", help="Server URL")
    ] = "http://127.0.0.1:8000",
    tasks: Annotated[str | None, typer.Option(help='e.g. asr,caption,mood="What mood?"')] = None,
) -> None:
    """Annotate one file on a running server; print the output row as JSON. The token is read
    from EARMARK_API_KEY."""
    from earmark.serve.client import QueryError, annotate

    try:
        row = annotate(file, url, tasks=tasks)
    except QueryError as exc:
        _fail(str(exc), code=1)
    out.print_json(json.dumps(row, default=str))
