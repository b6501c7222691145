"""Request bodies → (audio bytes or URL, tasks): multipart or JSON, validated, size-limited.

`/v1/annotate` takes either
- multipart/form-data: `file` (the audio) or `url`, optional `tasks` (`asr,mood="What mood?"`)
  and `prompts` (a JSON object name → prompt, merged into the tasks as custom tasks), or
- application/json: {"audio": base64 | "url": "...", "filename", "tasks", "prompts"}.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import UploadFile
from starlette.requests import Request

from earmark.contracts import TaskRequest, parse_tasks
from earmark.contracts.errors import validation_problems
from earmark.serve.config import ServeLimits, UrlPolicy
from earmark.serve.security import ApiError, check_url, fetch_http, read_body_limited, too_large
from earmark.source.member import is_packed_shard, split_member_uri

FORM_MAX_FIELDS = 16  # a request has a handful of fields; more is abuse
FORM_MAX_FIELD_BYTES = 64 << 10  # a prompt or task list, not a payload


class AnnotateJson(BaseModel):
    """JSON body of POST /v1/annotate."""

    model_config = ConfigDict(extra="forbid")

    audio: str | None = Field(default=None, description="The audio file, base64")
    url: str | None = Field(default=None, description="Object-store or https URL of the audio")
    filename: str | None = Field(default=None, max_length=255, description="Name for the row's uri")
    tasks: str | list[str | TaskRequest] | None = Field(
        default=None, description='"asr,caption" or a list; the server default when empty'
    )
    prompts: dict[str, str] | None = Field(default=None, description="Custom tasks name → prompt")

    @model_validator(mode="after")
    def _one_source(self) -> AnnotateJson:
        if (self.audio is None) == (self.url is None):
            raise ValueError("give exactly one of 'audio' (base64) or 'url'")
        return self


@dataclass
class AudioSource:
    data: bytes | None  # uploaded bytes, or None for a URL
    url: str | None
    filename: str

    @property
    def uri(self) -> str:
        return self.url or f"upload://{self.filename}"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limits: ServeLimits) -> bytes:
    """The whole body, refused with 413 as soon as it is larger than any allowed file needs."""
    error = ApiError(
        413,
        f"request body is larger than a request carrying an audio file of at most "
        f"{limits.max_upload_bytes} bytes can be (limits.max_upload_bytes)",
        "too_large",
    )
    return await read_body_limited(
        request.headers.get("content-length"),
        request.stream(),
        limits.max_body_bytes,
        error,
        idle_timeout_s=limits.body_idle_timeout_s,
        total_timeout_s=limits.body_timeout_s,
    )


async def read_form(request: Request, limits: ServeLimits) -> Any:
    """Parse a multipart body after reading it under the size limit."""
    body = await read_body(request, limits)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(
            max_files=2, max_fields=FORM_MAX_FIELDS, max_part_size=FORM_MAX_FIELD_BYTES
        )
    except Exception as exc:  # starlette raises MultiPartException/HTTPException on bad forms
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc)
        if "maximum size" in str(detail):  # a part without a filename is a text field
            raise ApiError(
                400,
                f"a form field is over {FORM_MAX_FIELD_BYTES >> 10} KB; send the audio as a file "
                'part with a file name (Content-Disposition: form-data; name="file"; '
                'filename="a.wav")',
            ) from None
        raise ApiError(400, f"malformed multipart body: {detail}") from None


def _one(form: Any, name: str) -> Any:
    """The form's single value for `name` (None if absent); 400 when it was sent twice."""
    values = form.getlist(name)
    if len(values) > 1:
        raise ApiError(400, f"form field {name!r} was sent {len(values)} times; send it once")
    return values[0] if values else None


async def upload_bytes(form: Any, field: str, limits: ServeLimits) -> bytes | None:
    item = _one(form, field)
    if item is None:
        return None
    if not isinstance(item, UploadFile):
        raise ApiError(400, f"form field {field!r} must be a file upload (a part with a file name)")
    data = await item.read()
    if len(data) > limits.max_upload_bytes:
        raise too_large(limits.max_upload_bytes)
    return data


def text_field(form: Any, name: str) -> str | None:
    value = _one(form, name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"form field {name!r} must be text, not a file")
    return value


def build_tasks(
    tasks: str | list[Any] | None, prompts: dict[str, str] | str | None, default: list[TaskRequest]
) -> list[TaskRequest]:
    """The request's tasks (default when none), with custom prompts merged; 400 when invalid."""
    try:
        if isinstance(prompts, str):
            prompts = json.loads(prompts) if prompts.strip() else None
            if prompts is not None and not isinstance(prompts, dict):
                raise ValueError("prompts must be a JSON object of name → prompt")
        items: list[Any] = []
        if tasks not in (None, "", []):
            items = [t.model_dump() for t in parse_tasks(tasks)]
        for name, prompt in (prompts or {}).items():
            items.append({"name": name, "prompt": prompt})
        return parse_tasks(items) if items else list(default)
    except (ValueError, ValidationError) as exc:
        raise ApiError(400, f"invalid tasks: {_one_line(exc)}") from None


async def parse_annotate(
    request: Request, limits: ServeLimits, default_tasks: list[TaskRequest]
) -> tuple[AudioSource, list[TaskRequest]]:
    """Audio source and tasks of a /v1/annotate request (multipart or JSON)."""
    mt = media_type(request)
    if mt == "multipart/form-data":
        form = await read_form(request, limits)
        data = await upload_bytes(form, "file", limits)
        url = text_field(form, "url")
        if (data is None) == (url is None):
            raise ApiError(400, "send exactly one of a 'file' upload or a 'url' field")
        upload = form.get("file")
        name = getattr(upload, "filename", None) or "audio"
        tasks = build_tasks(text_field(form, "tasks"), text_field(form, "prompts"), default_tasks)
        return AudioSource(data, url, _safe_name(name)), tasks
    if mt == "application/json":
        body = await read_body(request, limits)
        try:
            req = AnnotateJson.model_validate_json(body)
        except ValidationError as exc:
            raise ApiError(400, f"invalid JSON body: {_one_line(exc)}") from None
        data = None
        if req.audio is not None:
            if len(req.audio) * 3 // 4 > limits.max_upload_bytes + 3:
                raise too_large(limits.max_upload_bytes)
            try:
                data = base64.b64decode(req.audio, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "'audio' is not valid base64") from None
            if len(data) > limits.max_upload_bytes:  # the estimate above allows padding slack
                raise too_large(limits.max_upload_bytes)
        tasks = build_tasks(req.tasks, req.prompts, default_tasks)
        return AudioSource(data, req.url, _safe_name(req.filename or "audio")), tasks
    raise ApiError(
        415,
        f"unsupported content type {mt or 'none'!r}: send multipart/form-data or application/json",
        "unsupported_media_type",
    )


async def load_audio(src: AudioSource, limits: ServeLimits, policy: UrlPolicy) -> bytes:
    """The audio bytes: uploaded, or fetched from an allowed URL under the size limit."""
    if src.data is not None:
        return src.data
    assert src.url is not None
    checked = check_url(src.url, policy)
    if checked.scheme in ("http", "https"):
        if is_packed_shard(urlsplit(src.url).path):
            raise ApiError(
                400,
                "packed shards (.tar, .tar.gz, .parquet) are read from object-store URLs only "
                "(s3://BUCKET/SHARD#KEY); over http(s) send one clip",
                "packed_shard",
            )
        data, _ = await fetch_http(src.url, policy, limits.max_upload_bytes, limits.url_timeout_s)
        return data
    import asyncio

    return await asyncio.to_thread(read_object, checked.url, policy, limits.max_upload_bytes)


def read_object(url: str, policy: UrlPolicy, limit: int) -> bytes:
    """Read an object-store URL (already policy-checked) with the operator's storage options."""
    from earmark.contracts import ErrorKind, ErrorStage
    from earmark.storage import Location, classify_os_error

    member = split_member_uri(url)
    if member is None and is_packed_shard(url):
        raise ApiError(
            400,
            f"{url} is a packed shard of many clips: name one as URL#KEY (a tar sample's key, "
            "or a Parquet row number: the `uri` a job's row gives it), or annotate the whole "
            "shard with a job (earmark run)",
            "packed_shard",
        )
    try:
        if member is not None:
            return _read_member(*member, policy, limit)
        obj = Location(url, policy.storage_options)  # the operator's options, this request's URL
        size = obj.fs.info(obj.path).get("size")
        if size is not None and size > limit:
            raise too_large(limit, "audio at URL")
        with obj.fs.open(obj.path, "rb") as f:
            data = f.read(limit + 1)
    except ApiError:
        raise
    except Exception as exc:
        err = classify_os_error(exc, ErrorStage.READ, url)
        status = 502 if err.kind == ErrorKind.UNREACHABLE else 400
        raise ApiError(status, err.message.split(" (")[0], "url_unreadable") from None
    if len(data) > limit:
        raise too_large(limit, "audio at URL")
    return data


def _read_member(shard: str, key: str, policy: UrlPolicy, limit: int) -> bytes:
    """One member of a packed shard; its problems as 400 (413 over the limit) naming it."""
    from earmark.contracts import EarmarkError, ErrorKind
    from earmark.source.member import read_member
    from earmark.storage import Location

    packed = Location(shard, policy.storage_options)
    try:
        with packed.fs.open(packed.path, "rb") as f:
            return read_member(f, shard, key, max_bytes=limit)
    except EarmarkError as exc:
        if exc.kind == ErrorKind.TOO_LARGE:
            raise too_large(limit, "audio at URL") from None
        raise ApiError(400, exc.message, "url_unreadable") from None


def _safe_name(name: str) -> str:
    """A file name fit for a `upload://` uri: last path part, printable, bounded."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:255]
    return name or "audio"


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(validation_problems(exc.errors(), "body"))
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
