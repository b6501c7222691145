"""Real Ray nodes for tests: a head (`ray start --head`) and worker nodes joining it.

Each node is this process's own: its own temp dir, every listener on a free port, token auth on,
started as `ray start --block` in a new session and killed as a process tree, so neither the
session's embedded Ray nor any other Ray on the machine is touched (`ray stop` would stop them
all). Two nodes on one machine make a real two-node cluster: separate raylets, object stores and
worker pools, and a node can die on its own.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from paths import REPO
from servers import free_port

START_TIMEOUT_S = 120
BIN = Path(sys.executable).parent


@dataclass
class Node:
    """One `ray start --block` process tree."""

    proc: subprocess.Popen
    root: Path
    log: Path
    node_id: str = ""  # Ray's id of the node, once it has joined

    def kill(self) -> None:
        """SIGKILL the node and everything under it, as a machine that dies would."""
        kill_tree(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass(kw_only=True)
class Head(Node):
    address: str  # the dashboard (Jobs API): http://127.0.0.1:PORT
    gcs: str  # the GCS: 127.0.0.1:PORT, what `earmark run --address` and `ray start` take
    token: str
    env: dict[str, str]  # what a user's shell would hold: the address and the token
    workers: list[Node] = field(default_factory=list)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
        return subprocess.run(
            [sys.executable, "-m", "earmark.cli", *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})

    def nodes(self) -> list[dict]:
        """The cluster's nodes as the dashboard's state API lists them (alive and dead)."""
        req = urllib.request.Request(
            f"{self.address}/api/v0/nodes?limit=100&detail=1",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)["data"]["result"]["result"]

    def alive_ids(self) -> set[str]:
        return {n["node_id"] for n in self.nodes() if n["state"] == "ALIVE"}

    def wait_new_node(self, known: set[str], node: Node) -> str:
        """The id of the node that joined beyond `known` (a node takes 5-20 s to join)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (new := self.alive_ids() - known):
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"Ray node did not join: {node.log.read_text()}")
            time.sleep(0.5)
        (node_id,) = new
        return node_id


def kill_tree(pid: int) -> None:
    """SIGKILL `ray start --block` and everything under it (GCS, raylet, workers, job drivers).
    SIGTERM would make a node drain for 30 s first."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=20)


def _ready(url: str, token: str) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def node_env(root: Path, path_bin: Path | None = BIN) -> dict[str, str]:
    """The environment a node runs in: none of this shell's RAY_* settings, token auth on.
    `path_bin` is put first on PATH (a cluster node's `python` is usually Ray's own)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    base.pop("PYTHONPATH", None)
    base |= {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(root / "token"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "250",  # rich wraps messages at 80 columns when not on a terminal
    }
    if path_bin is not None:
        base["PATH"] = f"{path_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    return base


def bare_python(root: Path) -> Path:
    """The bin folder of a venv with nothing installed: a `python` on PATH that is not the one
    Ray runs under, as on a head whose `ray start` came from a venv that was never activated."""
    venv = root / "bare"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return venv / "bin"


def _node_ports() -> list[str]:
    """Every listener a node opens, each on a free port (workers take random ones by default)."""
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    return [f"{k}={v}" for k, v in ports.items()]


def _resource_args(cpus: float, resources: dict[str, float] | None) -> list[str]:
    args = [f"--num-cpus={cpus:g}", "--num-gpus=0", "--node-ip-address=127.0.0.1"]
    if resources:
        args.append(f"--resources={json.dumps(resources)}")
    return args


def _spawn(cmd: list[str], root: Path, env: dict[str, str], name: str) -> Node:
    log = root / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=root)  # fmt: skip
    return Node(proc=proc, root=root, log=log)


@contextmanager
def ray_head(
    *,
    cpus: float,
    resources: dict[str, float] | None = None,
    path_bin: Path | None = BIN,
) -> Iterator[Head]:
    """A head node with the dashboard (Jobs API); yields once the Jobs API answers."""
    # a short path: Ray's unix sockets live under it and must stay < 108 bytes
    root = Path(tempfile.mkdtemp(prefix="emhead-", dir="/tmp"))
    token = secrets.token_hex(24)
    (root / "token").write_text(token)
    env = node_env(root, path_bin)
    dash, gcs_port = free_port(), free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--dashboard-host=127.0.0.1",
           "--include-dashboard=true", f"--temp-dir={root / 'ray'}", "--disable-usage-stats",
           f"--port={gcs_port}", f"--dashboard-port={dash}",
           f"--ray-client-server-port={free_port()}", *_node_ports(),
           *_resource_args(cpus, resources)]  # fmt: skip
    node = _spawn(cmd, root, env, "head")
    address = f"http://127.0.0.1:{dash}"
    user_env = {**env, "RAY_ADDRESS": address}
    head = Head(proc=node.proc, root=root, log=node.log, address=address,
                gcs=f"127.0.0.1:{gcs_port}", token=token, env=user_env)  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(f"{address}/api/jobs/", token):
            if not node.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"Ray head did not start: {node.log.read_text()}")
            time.sleep(1)
        # the Jobs API may answer before the head is listed among the cluster's nodes
        head.node_id = head.wait_new_node(set(), head)
        yield head
    finally:
        for w in head.workers:
            w.kill()
        head.kill()
        shutil.rmtree(root, ignore_errors=True)


def add_worker(
    head: Head,
    *,
    cpus: float,
    resources: dict[str, float] | None = None,
    hide: Path | None = None,
) -> Node:
    """Join a worker node (its own temp dir and ports) to `head`; returns once it is alive.
    The head's context manager kills it at the end, if the test has not already.
    `hide`: a folder this node cannot see (its processes run in a mount namespace where an
    empty tmpfs covers it), as a node without a shared filesystem would."""
    root = Path(tempfile.mkdtemp(prefix="w", dir=head.root))
    (root / "token").write_text(head.token)
    known = head.alive_ids()
    cmd = [str(BIN / "ray"), "start", "--block", f"--address={head.gcs}",
           f"--temp-dir={root / 'ray'}", "--disable-usage-stats", *_node_ports(),
           *_resource_args(cpus, resources)]  # fmt: skip
    if hide is not None:
        cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
               f'mount -t tmpfs none "{hide}" && exec "$@"', "sh", *cmd]  # fmt: skip
    node = _spawn(cmd, root, node_env(root), "worker")
    head.workers.append(node)
    node.node_id = head.wait_new_node(known, node)
    return node
