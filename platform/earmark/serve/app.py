"""The Serve application: the HTTP ingress in front of the Annotator deployment, from one ServeSpec.

    client ─▶ Ingress: token, size limit, URL policy, decode + windows (CPU, threads)
                  ─▶ Annotator deployment (@serve.batch, autoscaled) ─▶ row fields
              ◀── the output row as JSON (same fields as the Parquet rows)

The ingress and its routes are in ingress.py, the FastAPI app and its error handling in api.py,
the model deployment in model.py.

`serve deploy serve_app/whisper.yaml` imports `earmark.serve.app:build_app` with the ServeSpec as
`args`; `earmark serve` builds the same application in-process.
"""

from __future__ import annotations

import os
from typing import Any

from earmark.serve.config import ServeSpec
from earmark.serve.ingress import Ingress
from earmark.serve.model import AnnotatorDeployment
from earmark.serve.security import token_digest


def build_application(spec: ServeSpec, api_key: str | None = None) -> Any:
    """The Serve application: Ingress → AnnotatorDeployment, both from one ServeSpec.

    The token (argument, else the spec's env var) travels to the ingress as a SHA-256 digest.
    """
    key = api_key if api_key is not None else os.environ.get(spec.api_key_env)
    digest = token_digest(key) if key else None
    model = AnnotatorDeployment.options(**spec.model_deployment_options()).bind(
        spec.model.model_dump(), [t.model_dump() for t in spec.tasks]
    )
    return Ingress.options(**spec.ingress_deployment_options()).bind(
        model, spec.model_dump(mode="json"), digest
    )


def build_app(args: dict[str, Any]) -> Any:
    """Entry point for `serve deploy`/`serve run` configs: `args` is a ServeSpec mapping."""
    return build_application(ServeSpec.model_validate(args or {}))
