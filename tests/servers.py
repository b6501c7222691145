"""Real servers for tests: a SeaweedFS S3 server on loopback with two identities (from
earmark.testing.s3server, shared with `earmark bench scale`) and proxies in front of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from earmark.testing.s3server import (  # noqa: F401  (re-exported: the tests import them here)
    S3_ADMIN,
    S3_READER,
    S3Server,
    filer_copy,
    filer_delete,
    free_port,
    weed_binary,
)


def upload_demo(fs, prefix: str, names: list[str] | None = None) -> list[str]:
    """Copy demo clips to `prefix` on an fsspec filesystem; returns their URIs."""
    from paths import DEMO

    uris = []
    for p in sorted(DEMO.iterdir()):
        if p.suffix in (".jsonl", ".md") or (names and p.name not in names):
            continue
        fs.pipe(f"{prefix}/{p.name}", p.read_bytes())
        uris.append(f"s3://{prefix}/{p.name}")
    return uris


class FlakyProxy:
    """An HTTP proxy in front of the S3 server that breaks the first GET of every object whose
    key contains `marker`: it sends the headers and a few body bytes, then drops the connection
    (a transient network failure seen mid-read)."""

    def __init__(self, upstream_port: int, marker: str) -> None:
        import http.client
        import http.server
        import threading

        self.failures = 0
        seen: set[str] = set()
        lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                key = self.path.split("?")[0]
                flaky = self.command == "GET" and marker in key and resp.status in (200, 206)
                with lock:
                    first = flaky and key not in seen
                    if first:
                        seen.add(key)
                        proxy.failures += 1
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.end_headers()
                if first:
                    self.wfile.write(data[:16])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


def s3_operation(method: str, target: str) -> str:
    """The S3 operation a path-style request names, from its method, path and query alone."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = "/" in parts.path.strip("/")
    if method == "GET" and query.get("list-type") == ["2"]:
        return "ListObjectsV2"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if has_key:
        if "uploadId" in query or "uploads" in query:
            return f"{method}Multipart"
        return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject",
                "DELETE": "DeleteObject"}.get(method, f"{method}Object")  # fmt: skip
    return f"{method}Bucket"


class ThrottlingProxy:
    """An HTTP proxy in front of the S3 server that refuses a fixed fraction of requests the way
    a throttled store does: the 1st, (1+every)th, (1+2*every)th ... request of each S3 operation
    (see `s3_operation`; only those in `operations`, when given) is answered with `status` and an
    S3 `<Error><Code>code</Code>` body (no body for HEAD) instead of being forwarded. With
    `every=None` it refuses nothing and only counts.

    Deterministic, and never refuses a request twice in a row: a request repeated right after its
    refusal (same method and URL: the client's retry) is always forwarded, so a client that
    retries gets through however its requests interleave. `requests` counts every request by
    operation, `refused` the ones answered with `status`."""

    def __init__(
        self,
        upstream_port: int,
        *,
        every: int | None = 3,
        status: int = 503,
        code: str = "SlowDown",
        message: str = "Please reduce your request rate.",
        operations: set[str] | None = None,
    ) -> None:
        import collections
        import http.client
        import http.server
        import threading

        if every is not None and every < 1:
            raise ValueError("every must be at least 1 (or None: refuse nothing)")
        self.requests: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        just_refused: set[tuple[str, str]] = set()
        lock = threading.Lock()
        proxy = self

        def decide(method: str, target: str) -> tuple[str, bool]:
            op = s3_operation(method, target)
            with lock:
                proxy.requests[op] += 1
                if (method, target) in just_refused:
                    just_refused.discard((method, target))
                    return op, False
                refuse = (
                    every is not None
                    and (operations is None or op in operations)
                    and (proxy.requests[op] - 1) % every == 0
                )
                if refuse:
                    proxy.refused[op] += 1
                    just_refused.add((method, target))
                return op, refuse

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            def _refuse(self) -> None:
                body = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message><Resource>{self.path}</Resource>"
                    "<RequestId>throttled</RequestId></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-amz-request-id", "throttled")
                self.send_header(
                    "Content-Length", "0" if self.command == "HEAD" else str(len(body))
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self):
                body = self._body()  # read whole, refused or not: the connection stays usable
                _, refuse = decide(self.command, self.path)
                if refuse:
                    self._refuse()
                    return
                hop = ("expect", "transfer-encoding", "connection")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                skip = ("transfer-encoding", "connection", "content-length")
                if self.command == "HEAD":  # a HEAD's Content-Length is the object's size
                    skip = ("transfer-encoding", "connection")
                for k, v in resp.getheaders():
                    if k.lower() not in skip:
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def options(self, who: dict = S3_ADMIN) -> dict:
        """fsspec storage options reaching the S3 server through this proxy."""
        return {"key": who["key"], "secret": who["secret"],
                "client_kwargs": {"endpoint_url": self.endpoint}}  # fmt: skip

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def serve_app(spec, api_key: str | None = None, timeout_s: float = 240) -> Iterator[str]:
    """The earmark Serve application of `spec` on a free loopback port; yields its base URL and
    shuts Serve down after."""
    from ray import serve

    from earmark.serve.app import build_application
    from earmark.serve.config import APP_NAME
    from earmark.serve.run import wait_ready

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_application(spec, api_key=api_key), name=APP_NAME, route_prefix="/")
        wait_ready(APP_NAME, timeout_s=timeout_s)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
