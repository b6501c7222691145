"""Two test S3 servers run side by side: every listener SeaweedFS opens is on a port we chose.

Two suites on one machine each start their own SeaweedFS; a listener on a fixed default port
(Iceberg's 8181, Lance's 9101, ...) would make the second one fail. No Ray needed.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from servers import S3Server

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads listening sockets from /proc"
)

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def listening_ports(pid: int) -> set[int]:
    """TCP ports the process `pid` listens on (from /proc: no `ss` needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == TCP_LISTEN and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _settled_ports(servers: list[S3Server], timeout_s: float = 10.0) -> list[set[int]]:
    """Each server's listening ports once all of ours are up, plus a moment for any late extra
    listener (the fixed-port ones start right after the S3 gateway)."""
    deadline = time.time() + timeout_s
    for server in servers:
        while not set(server.ports.values()) <= listening_ports(server.proc.pid):
            assert time.time() < deadline, "SeaweedFS did not open all its ports"
            time.sleep(0.2)
    time.sleep(0.5)
    return [listening_ports(server.proc.pid) for server in servers]


def test_two_servers_side_by_side(tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:  # start both at once: it halves the wait
        futures = [pool.submit(S3Server, tmp_path / name) for name in ("a", "b")]
    servers = [f.result() for f in futures if f.exception() is None]
    if len(servers) < len(futures):  # one failed: stop the other before reporting why
        for server in servers:
            server.stop()
        raise next(f.exception() for f in futures if f.exception() is not None)
    try:
        a, b = servers
        ports_a, ports_b = _settled_ports(servers)
        assert ports_a == set(a.ports.values())
        assert ports_b == set(b.ports.values())
        assert not ports_a & ports_b
        # both answer, and each is its own store
        a.admin.pipe("out/only-a", b"a")
        b.admin.pipe("out/only-b", b"b")
        assert a.admin.cat("out/only-a") == b"a" and not a.admin.exists("out/only-b")
        assert b.admin.cat("out/only-b") == b"b" and not b.admin.exists("out/only-a")
    finally:
        for server in servers:
            server.stop()
    left = [s for port in ports_a | ports_b for s in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    assert not left, "stop() leaves SeaweedFS's Unix sockets behind"
