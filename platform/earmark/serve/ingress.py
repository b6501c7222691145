"""The HTTP ingress deployment: token, size limit, URL policy, decode + windows (CPU, threads),
then the Annotator deployment; the output row as JSON (same fields as the Parquet rows).

Routes: POST /v1/annotate, POST /v1/audio/transcriptions (OpenAI-compatible), GET /v1/models,
GET /v1/stats, GET /healthz (the only route without the token), GET /openapi.json.
Every error is a JSON body {"error": {"message", "type", "code"}}; no stack trace leaves here.
"""

# No `from __future__ import annotations` here: Serve re-wraps the route methods and FastAPI
# must see real `Request` annotations, not strings it would resolve in Ray's module.
import asyncio
import datetime as dt
import hashlib
import logging
import os
import time
from collections import Counter
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from earmark.annotate.decoded import probe_fields
from earmark.contracts import EarmarkError, ErrorKind, OutputRow, TaskRequest
from earmark.serve.api import CatchAll, api
from earmark.serve.config import ServeSpec
from earmark.serve.formats import RESPONSE_FORMATS, to_srt, to_verbose_json, to_vtt, usage
from earmark.serve.inputs import (
    AudioSource,
    build_tasks,
    load_audio,
    media_type,
    parse_annotate,
    read_form,
    text_field,
    upload_bytes,
)
from earmark.serve.security import ApiError, check_bearer, token_digest

log = logging.getLogger(__name__)

BATCH_HEADER = "X-Earmark-Batch-Size"  # size of the model batch a request rode in
REPLICA_RETRY_DELAY_S = 0.5  # pause before resending a request whose replica died
HEALTH_CACHE_S = 1.0  # /healthz asks the Serve controller at most this often
# decode failures are the client's file: 400; too long: 422 (the request is well-formed)
DECODE_STATUS = {ErrorKind.TOO_LONG: 422, ErrorKind.TOO_LARGE: 413}


def _decode_error(err: EarmarkError, what: str, max_duration_s: float) -> ApiError:
    status = DECODE_STATUS.get(err.kind, 400)
    msg = err.message
    if err.kind == ErrorKind.TOO_LONG:  # the decoder speaks in hours, for archives
        msg = (
            f"{what} is longer than the server's limit of {max_duration_s:g} s of audio "
            "(limits.max_duration_s)"
        )
    return ApiError(status, msg, f"audio_{err.kind}")


@serve.deployment(name="Ingress")
@serve.ingress(api)
class Ingress:
    def __init__(self, model: DeploymentHandle, spec: dict[str, Any], key_digest: str | None):
        from earmark.contracts import family
        from earmark.models.registry import model_class

        self.model = model
        self.spec = ServeSpec.model_validate(spec)
        env_key = os.environ.get(self.spec.api_key_env)
        self.key_digest = key_digest or (token_digest(env_key) if env_key else None)
        self.info = family(self.spec.model.family)
        # prepare() only, no weights (the engine decides the features)
        self.model_cls = model_class(self.spec.model.family, self.spec.model.engine)
        self.names = {self.spec.model_id, self.spec.model.family, *self.spec.model_aliases}
        self.batch_sizes: Counter[int] = Counter()
        self._health: tuple[float, bool, str] = (0.0, False, "not checked yet")

    # -- helpers ------------------------------------------------------------------------------
    def _auth(self, request: Request) -> None:
        check_bearer(request.headers.get("authorization"), self.key_digest)

    def _check_tasks(self, tasks: list[TaskRequest]) -> None:
        for t in tasks:
            if (t.is_custom and "custom" not in self.info.tasks) or (
                not t.is_custom and t.name not in self.info.tasks
            ):
                raise ApiError(
                    400,
                    f"model {self.spec.model_id} cannot do task {t.name!r}; it supports "
                    f"{', '.join(self.info.tasks)}",
                    "unsupported_task",
                )

    async def _call_model(self, windows: list, tasks: list[TaskRequest]) -> dict[str, Any]:
        """Send windows to a model replica; resend once if that replica died meanwhile."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        payload = [t.model_dump() for t in tasks]
        for attempt in range(2):
            try:
                return await self.model.annotate.remote(windows, payload)
            except (RayActorError, ActorUnavailableError) as exc:
                log.warning("model replica failed (%s); attempt %d", type(exc).__name__, attempt)
                if attempt:
                    raise ApiError(
                        503,
                        "the model replica failed while handling this request; retry",
                        "replica_failed",
                    ) from None
                await asyncio.sleep(REPLICA_RETRY_DELAY_S)
        raise AssertionError("unreachable")

    async def _row(self, src: AudioSource, tasks: list[TaskRequest]) -> tuple[dict, int]:
        """The output row for one audio source, and the model batch size it rode in."""
        from earmark.audio.decode import decode_audio
        from earmark.audio.segment import make_windows
        from earmark.source.listing import audio_id_for

        self._check_tasks(tasks)
        limits = self.spec.limits
        data = await load_audio(src, limits, self.spec.urls)
        digest = hashlib.sha256(data).hexdigest()[:32]
        audio_id = audio_id_for(src.uri, len(data), digest)
        what = src.filename if src.data is not None else src.uri
        try:
            audio = await asyncio.to_thread(
                decode_audio, data, what=what, max_duration_s=limits.max_duration_s
            )
        except EarmarkError as err:
            raise _decode_error(err, what, limits.max_duration_s) from None
        windows = await asyncio.to_thread(make_windows, audio_id, audio.samples, self.model_cls)
        result = await self._call_model(windows, tasks)
        if "error" in result:
            if result.get("kind") == "unavailable":  # the replica's fault, not the audio's
                raise ApiError(503, result["error"], "model_unavailable")
            status = 422 if result.get("kind") == "model_error" else 500
            msg = f"the model failed on this audio: {result['error']}"
            raise ApiError(status, msg, "model_error")
        row = {
            "audio_id": audio_id,
            "uri": src.uri,
            "size_bytes": len(data),
            "status": "ok",
            **probe_fields(audio),
            "created_at": dt.datetime.now(dt.UTC),
            **result["fields"],
        }
        batch = int(result.get("batch_size", 1))
        self.batch_sizes[batch] += 1
        return OutputRow.model_validate(row).model_dump(mode="json"), batch

    # -- routes -------------------------------------------------------------------------------
    @api.get("/healthz", summary="Liveness and model readiness (no token)")
    async def healthz(self) -> JSONResponse:
        ok, detail = await self._model_ready()
        body = {
            "status": "ok" if ok else "unavailable",
            "model": self.spec.model_id,
            "detail": detail,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def _model_ready(self) -> tuple[bool, str]:
        at, ok, detail = self._health
        if time.monotonic() - at < HEALTH_CACHE_S:
            return ok, detail
        try:
            status = await asyncio.to_thread(serve.status)
            app = next(a for a in status.applications.values() if "Annotator" in a.deployments)
            dep = app.deployments["Annotator"]
            running = dep.replica_states.get("RUNNING", 0)
            ok, detail = running > 0, f"{running} model replica(s) running ({dep.status})"
        except Exception as exc:  # controller unreachable: say so, do not crash the probe
            ok, detail = False, f"Serve status unavailable ({type(exc).__name__})"
        self._health = (time.monotonic(), ok, detail)
        return ok, detail

    @api.get("/v1/models", summary="Models served (OpenAI list format)")
    async def models(self, request: Request) -> dict[str, Any]:
        self._auth(request)
        entries = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "earmark",
                "family": self.info.name,
                "tasks": list(self.info.tasks),
                "model": self.spec.model_id,
            }
            for name in [self.spec.model_id, *self.spec.model_aliases]
        ]
        return {"object": "list", "data": entries}

    @api.get("/v1/stats", summary="Model batch sizes seen by this ingress replica")
    async def stats(self, request: Request) -> dict[str, Any]:
        self._auth(request)
        return {
            "model": self.spec.model_id,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "max_batch_size_seen": max(self.batch_sizes, default=0),
            "responses": {str(k): v for k, v in sorted(CatchAll.responses.items())},
            "max_batch_size": self.spec.batching.max_batch_size,
            # vLLM: what the engine of the replica that answers did (encoder items, most
            # requests in flight at once); None on the transformers engine
            "engine": (
                await self.model.engine_stats.remote() if self.spec.model.engine != "hf" else None
            ),
        }

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> dict[str, Any]:
        self._auth(request)
        return api.openapi()

    @api.post(
        "/v1/annotate",
        summary="Annotate one audio file; returns the output row",
        response_model=OutputRow,
        openapi_extra={"requestBody": {"content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}, "url": {"type": "string"},
                "tasks": {"type": "string", "example": 'asr,mood="What is the mood?"'},
                "prompts": {"type": "string", "description": "JSON object name → prompt"}}}},
            "application/json": {"schema": {"type": "object", "properties": {
                "audio": {"type": "string", "description": "base64 audio file"},
                "url": {"type": "string"}, "filename": {"type": "string"},
                "tasks": {"type": "string"}, "prompts": {"type": "object"}}}},
        }}},
    )  # fmt: skip
    async def annotate(self, request: Request) -> JSONResponse:
        self._auth(request)
        src, tasks = await parse_annotate(request, self.spec.limits, self.spec.tasks)
        row, batch = await self._row(src, tasks)
        return JSONResponse(row, headers={BATCH_HEADER: str(batch)})

    @api.post(
        "/v1/audio/transcriptions",
        summary="OpenAI-compatible transcription",
        openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file", "model"], "properties": {
                "file": {"type": "string", "format": "binary"}, "model": {"type": "string"},
                "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS)},
                "language": {"type": "string"}, "prompt": {"type": "string"},
                "temperature": {"type": "number"}}}}}}},
    )  # fmt: skip
    async def transcriptions(self, request: Request) -> Response:
        self._auth(request)
        if media_type(request) != "multipart/form-data":
            raise ApiError(
                415, "send the audio as multipart/form-data with a 'file' field",
                "unsupported_media_type",
            )  # fmt: skip
        limits = self.spec.limits
        form = await read_form(request, limits)
        data = await upload_bytes(form, "file", limits)
        if data is None:
            raise ApiError(400, "missing form field 'file' (the audio)")
        model = (text_field(form, "model") or "").strip()
        if not model:
            raise ApiError(400, "missing form field 'model' (e.g. whisper-1)")
        if model not in self.names:
            names = ", ".join(sorted(self.names))
            msg = f"model {model!r} is not served here; use one of {names}"
            raise ApiError(404, msg, "model_not_found")
        fmt = (text_field(form, "response_format") or "json").strip()
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
        language = (text_field(form, "language") or "").strip().lower()
        english_only = self.spec.model_id.endswith(".en")
        if english_only and language not in ("", "en", "english"):
            msg = f"model {self.spec.model_id} transcribes English only (language=en)"
            raise ApiError(400, msg)
        for g in form.getlist("timestamp_granularities[]"):
            if g != "segment":
                raise ApiError(400, f"timestamp granularity {g!r} is not supported; use 'segment'")
        name = getattr(form.get("file"), "filename", None) or "audio"
        if "asr" not in self.info.tasks:
            msg = f"model {self.spec.model_id} does not transcribe"
            raise ApiError(400, msg, "unsupported_task")
        row, batch = await self._row(AudioSource(data, None, name), build_tasks("asr", None, []))
        headers = {BATCH_HEADER: str(batch)}
        ignored = [f for f in ("prompt", "temperature") if text_field(form, f)]
        if language and not english_only:
            ignored.append("language")  # a hint earmark's prompts do not take
        if ignored:
            headers["X-Earmark-Ignored"] = ",".join(ignored)
        text = row.get("transcript") or ""
        if fmt == "json":
            return JSONResponse({"text": text, "usage": usage(row)}, headers=headers)
        if fmt == "verbose_json":
            lang = language or row.get("language") or ("en" if english_only else "unknown")
            return JSONResponse(to_verbose_json(row, lang), headers=headers)
        body = {"text": text + "\n", "srt": to_srt(row), "vtt": to_vtt(row)}[fmt]
        media = "text/vtt" if fmt == "vtt" else "text/plain"
        return PlainTextResponse(body, media_type=media, headers=headers)
