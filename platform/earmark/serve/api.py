"""The FastAPI app the ingress serves, and its error handling: every error (unknown routes, wrong
methods and invalid requests included) is a JSON body {"error": {"message", "type", "code"}}, and
an outermost guard turns an unexpected exception into a JSON 500 and counts responses by status.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from earmark import __version__
from earmark.contracts.errors import validation_problems
from earmark.serve.security import ApiError

log = logging.getLogger(__name__)

CLIENT_GONE = 499  # counted (nginx's code) when a client disconnects before its response

api = FastAPI(
    title="earmark",
    version=__version__,
    description="Annotate audio with audio-language models (same rows as the batch job).",
    openapi_url=None,  # served by the ingress (/openapi.json), behind the token
    docs_url=None,
    redoc_url=None,
)


@api.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes (404) and wrong methods (405) answer in the same error format."""
    msg = {404: "no such route", 405: "method not allowed on this route"}.get(
        exc.status_code, str(exc.detail)
    )
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = ApiError(exc.status_code, msg, codes.get(exc.status_code, "http_error")).body()
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    msg = "; ".join(validation_problems(list(exc.errors()), "request"))
    return JSONResponse(ApiError(422, msg or "invalid request").body(), status_code=422)


class CatchAll:
    """Outermost guard: an unexpected exception becomes a JSON 500, its trace only in the log;
    counts every response of this process (one ingress replica) by status, for /v1/stats.

    The counter is a class attribute, not a module global: Serve pickles the ingress class by
    value, which would give its methods a copy of a module-level dict, while this class is
    pickled by reference, so both sides see the same counter."""

    responses: ClassVar[Counter[int]] = Counter()

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                CatchAll.responses[int(message["status"])] += 1
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:  # the client left mid-upload: nobody to answer
            log.info("client disconnected during %s", scope.get("path"))
            CatchAll.responses[CLIENT_GONE] += 1
        except Exception:
            log.exception("unhandled error on %s", scope.get("path"))
            if not started:
                err = ApiError(500, "internal server error (logged on the server)", "internal")
                await JSONResponse(err.body(), status_code=500)(scope, receive, tracking_send)


api.add_middleware(CatchAll)
