"""Request security: bearer token, body size limit, URL policy (no SSRF).

`ApiError` carries an HTTP status and a message for the client; the ingress turns it into a JSON
error body. Nothing here ever returns a stack trace to a client.

URL inputs: the scheme must be configured; object-store URLs (s3://bucket/key) must name an
allowed bucket and are read through the operator's storage options (the endpoint is the
operator's, never the client's); http(s) URLs are resolved, and EVERY resolved address must be a
public unicast one. The connection then goes to that checked address (Host header and TLS SNI
keep the name), so a DNS answer that changes between check and connect cannot redirect it.
Redirects are followed by hand, each hop checked the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from earmark.serve.config import NEVER_SCHEMES, UrlPolicy

READ_CHUNK_BYTES = 1 << 16  # streamed reads of bodies and downloads
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


class ApiError(Exception):
    """An error answered to the client: HTTP status, machine-readable code, readable message."""

    def __init__(self, status: int, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "code": self.code}}


# -- bearer token ---------------------------------------------------------------------------------


def token_digest(token: str) -> str:
    """Only the digest travels to replicas and is kept in memory, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_bearer(authorization: str | None, digest: str | None) -> None:
    """Raise 401 unless the Authorization header carries the token (no-op without a token)."""
    if digest is None:
        return
    if not authorization:
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <key>'", "no_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "malformed Authorization header: use 'Bearer <key>'", "no_token")
    if not hmac.compare_digest(token_digest(token.strip()), digest):
        raise ApiError(401, "invalid API key", "invalid_api_key")


# -- body size ------------------------------------------------------------------------------------


def too_large(limit: int, what: str = "audio file") -> ApiError:
    return ApiError(
        413,
        f"{what} is over the server's limit of {limit} bytes (limits.max_upload_bytes)",
        "too_large",
    )


async def read_body_limited(
    content_length: str | None,
    chunks: Any,
    limit: int,
    error: ApiError,
    *,
    idle_timeout_s: float = math.inf,
    total_timeout_s: float = math.inf,
) -> bytes:
    """Read an async byte stream, raising `error` (a 413) as soon as it passes `limit` bytes.

    A declared Content-Length over the limit is refused before reading anything. A client
    that stops sending for `idle_timeout_s`, or has not sent the whole body after
    `total_timeout_s`, gets a 408: a held-open upload would otherwise occupy one of the
    ingress's ongoing-request slots for as long as the client likes.
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if declared > limit:
            raise error
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout_s
    it = chunks.__aiter__()
    buf = bytearray()
    while True:
        wait = min(idle_timeout_s, deadline - loop.time())
        try:
            if wait <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(it.__anext__(), wait)
        except StopAsyncIteration:
            return bytes(buf)
        except TimeoutError:
            idle = wait == idle_timeout_s
            why = f"no data for {idle_timeout_s:g} s" if idle else f"over {total_timeout_s:g} s"
            raise ApiError(
                408,
                f"the request body arrived too slowly ({why} after {len(buf)} bytes; "
                "limits.body_idle_timeout_s / limits.body_timeout_s)",
                "request_timeout",
            ) from None
        buf += chunk
        if len(buf) > limit:
            raise error


# -- URL policy -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    scheme: str
    host: str  # bucket for object stores
    path: str
    port: int | None


def forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address may not be fetched (None when it is a public unicast address)."""
    mapped = getattr(ip, "ipv4_mapped", None) or getattr(ip, "sixtofour", None)
    if mapped is not None:
        return forbidden_address(mapped)
    for attr, why in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local (cloud metadata lives here)"),
        ("is_private", "private"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return why
    if not ip.is_global:
        return "not globally routable"
    return None


def check_url(url: str, policy: UrlPolicy) -> CheckedUrl:
    """Syntax and policy checks that need no network; raise ApiError (400/403)."""
    if not isinstance(url, str) or not url.strip():
        raise ApiError(400, "url is empty")
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ApiError(400, f"url is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in NEVER_SCHEMES or len(scheme) == 1:  # "c:\..." parses as scheme "c"
        raise ApiError(
            403, "local paths and file:// URLs are never read by the server", "url_forbidden"
        )
    if scheme not in policy.allowed_schemes:
        raise ApiError(
            403,
            f"URL scheme {scheme!r} is not allowed here; allowed: "
            f"{', '.join(policy.allowed_schemes) or 'none'}",
            "url_forbidden",
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise ApiError(400, f"url {url!r} names no host or bucket")
    if parts.username or parts.password:
        raise ApiError(400, "credentials in URLs are not accepted")
    if scheme in OBJECT_STORE_SCHEMES:
        if host not in policy.allowed_buckets:
            raise ApiError(403, f"bucket {host!r} is not allowed here", "url_forbidden")
        key = parts.path.lstrip("/")
        if not key or any(seg in ("..", ".") for seg in key.split("/")):
            raise ApiError(400, f"url {url!r} must name an object key without '..'")
        return CheckedUrl(url, scheme, host, key, None)
    if scheme not in ("http", "https"):
        return CheckedUrl(url, scheme, host, parts.path, port)  # another configured fsspec scheme
    if policy.allowed_hosts is not None and host not in policy.allowed_hosts:
        raise ApiError(403, f"host {host!r} is not allowed here", "url_forbidden")
    port = port or (443 if scheme == "https" else 80)
    if port not in policy.allowed_ports:
        raise ApiError(403, f"port {port} is not allowed here", "url_forbidden")
    try:  # a literal address is checked now; a name once it is resolved
        why = forbidden_address(ipaddress.ip_address(host))
    except ValueError:
        why = None
    if why:
        raise ApiError(403, f"URL points to a {why} address ({host})", "url_forbidden")
    return CheckedUrl(url, scheme, host, parts.path, port)


async def resolve_public(host: str, port: int) -> list[str]:
    """All addresses `host` resolves to; 403 if any of them is not public (or none resolve)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ApiError(400, f"host {host!r} cannot be resolved ({exc})") from None
    addrs = sorted({info[4][0] for info in infos})
    if not addrs:
        raise ApiError(400, f"host {host!r} resolves to no address")
    for a in addrs:
        why = forbidden_address(ipaddress.ip_address(a.split("%")[0]))
        if why:
            raise ApiError(403, f"host {host!r} resolves to a {why} address ({a})", "url_forbidden")
    return addrs


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def fetch_http(
    url: str, policy: UrlPolicy, limit: int, timeout_s: float, resolver: Resolver = resolve_public
) -> tuple[bytes, str]:
    """GET a public http(s) URL, pinned to checked addresses; (content, final URL)."""
    import httpx

    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        for _ in range(policy.max_redirects + 1):
            checked = check_url(url, policy)
            addrs = await resolver(checked.host, checked.port or 443)
            ip = addrs[0]
            netloc = f"[{ip}]" if ":" in ip else ip
            parts = urlsplit(url)
            pinned = parts._replace(netloc=f"{netloc}:{checked.port}").geturl()
            headers = {"Host": parts.netloc.rpartition("@")[2]}
            ext = {"sni_hostname": checked.host} if checked.scheme == "https" else {}
            try:
                async with client.stream("GET", pinned, headers=headers, extensions=ext) as r:
                    if r.status_code in REDIRECT_CODES and "location" in r.headers:
                        url = urljoin(url, r.headers["location"])
                        continue
                    if r.status_code != 200:
                        raise ApiError(400, f"URL answered HTTP {r.status_code}", "url_unreadable")
                    data = await read_body_limited(
                        r.headers.get("content-length"),
                        r.aiter_bytes(),
                        limit,
                        too_large(limit, "audio at URL"),
                    )
                    return data, url
            except httpx.HTTPError as exc:
                raise ApiError(
                    502, f"URL could not be fetched: {type(exc).__name__}", "url_unreadable"
                ) from None
    raise ApiError(400, f"URL redirected more than {policy.max_redirects} times", "url_unreadable")
