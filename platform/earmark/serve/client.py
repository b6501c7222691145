"""Client of the endpoint (`earmark query`): send a file or a URL, get the output row back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 600.0  # a long file on a busy CPU server takes minutes
URL_PREFIXES = ("s3://", "gs://", "az://", "http://", "https://")


class QueryError(Exception):
    """The server refused or failed the request; the message is the server's."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def annotate(
    source: str | Path,
    url: str = DEFAULT_URL,
    *,
    tasks: str | None = None,
    prompts: dict[str, str] | None = None,
    api_key: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> dict[str, Any]:
    """POST /v1/annotate with a local file (multipart) or a remote URL (JSON); the row."""
    import json

    import httpx

    key = api_key if api_key is not None else os.environ.get("EARMARK_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    endpoint = url.rstrip("/") + "/v1/annotate"
    text = str(source)
    try:
        if text.startswith(URL_PREFIXES):
            body: dict[str, Any] = {"url": text, "tasks": tasks, "prompts": prompts}
            r = httpx.post(endpoint, json=body, headers=headers, timeout=timeout_s)
        else:
            path = Path(text)
            if not path.is_file():
                raise QueryError(None, f"{path} is not a file")
            data: dict[str, str] = {}
            if tasks:
                data["tasks"] = tasks
            if prompts:
                data["prompts"] = json.dumps(prompts)
            with path.open("rb") as f:
                r = httpx.post(
                    endpoint,
                    files={"file": (path.name, f, "application/octet-stream")},
                    data=data,
                    headers=headers,
                    timeout=timeout_s,
                )
    except httpx.HTTPError as exc:
        raise QueryError(None, f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
    if r.status_code != 200:
        raise QueryError(r.status_code, f"HTTP {r.status_code}: {_message(r)}")
    return r.json()


def _message(r: Any) -> str:
    try:
        return r.json()["error"]["message"]
    except Exception:
        return r.text[:500] or r.reason_phrase
