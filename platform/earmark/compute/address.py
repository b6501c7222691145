"""Which Ray address each command takes, refused with the right form before Ray is touched.

A Ray cluster answers on three addresses, and each earmark command needs a specific one:

- the GCS, `HEAD:6379` (or `auto`: the cluster this machine is a node of): a Ray *driver*
  connects there. `earmark run --address` and `earmark scan --address` take it: the driver runs
  Ray Data's executor and must reach every node.
- the dashboard, `http://HEAD:8265`: the Jobs API. `earmark submit` and `earmark jobs` take it
  (infra/README.md tells users to export it as RAY_ADDRESS).
- Ray Client, `ray://HEAD:10001`: a proxy for a remote driver. Ray Data does not run over it
  (issue 13, on a two-node cluster; Ray's docs send ML workloads to the Jobs API instead), so
  `earmark run` refuses it, and `earmark submit` too, where Ray's SDK would wait for a Ray Client
  connection and time out.

`ray.init()` reads RAY_ADDRESS from the environment whenever it is not given an address (and for
`auto`), and takes any `scheme://` address for Ray Client. An exported Jobs API address therefore
made a plain local `earmark run` crash in `ray.init` with a traceback. A user who runs without
`--address` expects a run on this machine (the README's "embedded Ray" row), so an http(s)
RAY_ADDRESS is ignored for `run` with a one-line note, not refused: refusing would make every user
who follows infra/README unset the variable between `submit` and a local `run`, for no safety.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping

from earmark.contracts import JobError

ENV = "RAY_ADDRESS"
GCS_FORM = "--address HEAD:6379 (the head's GCS port) or --address auto on a cluster node"
JOBS_FORM = "http://HEAD:8265 (the head's dashboard)"


def kind(address: str) -> str:
    """`client` (ray://), `jobs` (http/https: the dashboard), `auto`, `local` or `gcs`."""
    scheme = address.split("://", 1)[0].lower() if "://" in address else ""
    if scheme == "ray":
        return "client"
    if scheme in ("http", "https"):
        return "jobs"
    if address in ("auto", "local"):
        return address
    return "gcs"


def resolve_run_address(
    address: str | None,
    *,
    note: Callable[[str], object] | None = None,
    client_ok: bool = False,
    environ: MutableMapping[str, str] = os.environ,
) -> str | None:
    """The address `earmark run`/`scan` passes to ray.init (None: an embedded local Ray, or the
    GCS address a Ray job sets in RAY_ADDRESS). Raises JobError for an address no driver can use;
    `client_ok` lets a Ray Client address through (Serve, which does not need Ray Data).

    An http(s) RAY_ADDRESS is removed from `environ` (after `note` says so): ray.init and the Ray
    processes this driver starts read it, and would take it for a Ray Client address."""
    env = environ.get(ENV) or None
    if address is not None:
        given = f"--address {address}"
        if kind(address) == "client" and not client_ok:
            raise JobError(_client_refusal(given))
        if kind(address) == "jobs":
            raise JobError(
                f"{given} is the Jobs API (the dashboard), which takes jobs, not drivers: submit "
                f"the spec there with `earmark submit SPEC --address {address}`, or run the "
                f"driver yourself with {GCS_FORM}"
            )
    if env is None or (address is not None and address != "auto"):
        return address  # an explicit GCS address: ray.init does not read RAY_ADDRESS then
    if kind(env) == "client" and not client_ok:
        raise JobError(_client_refusal(f"{ENV}={env}") + f", or unset {ENV} for a local run")
    if kind(env) == "jobs":
        del environ[ENV]
        if note is not None:
            where = "a local Ray" if address is None else "the cluster this node belongs to"
            note(
                f"note: ignoring {ENV}={env}, a Jobs API address (for `earmark submit` and "
                f"`earmark jobs`); this run uses {where}. To run on that cluster: "
                "`earmark submit SPEC` (or `earmark run --address HEAD:6379`)."
            )
    return address


def check_submit_address(address: str | None) -> None:
    """Refuse a Ray Client address for the Jobs API (Ray's SDK would wait for a Ray Client
    connection and time out); GCS addresses and `auto` work, Ray finds the dashboard."""
    address = address or os.environ.get(ENV)
    if address and kind(address) == "client":
        raise JobError(
            f"Ray address {address} (from --address or {ENV}) is a Ray Client address; "
            f"`earmark submit` and `earmark jobs` talk to the Jobs API: --address {JOBS_FORM}"
        )


def _client_refusal(given: str) -> str:
    return (
        f"{given} is a Ray Client address, and Ray Data does not run over Ray Client: give the "
        f"driver the GCS address, {GCS_FORM}, or submit the job: `earmark submit SPEC "
        f"--address {JOBS_FORM}`"
    )
