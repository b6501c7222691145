"""Run the endpoint on this machine (`earmark serve`): embedded Ray, Serve on HOST:PORT, until
Ctrl-C or SIGTERM, then a clean shutdown (Serve drains in-flight requests, Ray stops)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from earmark.schemas import JobError
from earmark.serve.config import APP_NAME, ServeSpec, check_serve_plan

READY_TIMEOUT_S = 600.0  # model download/load on a cold machine can take minutes
READY_POLL_S = 0.5


def start(
    spec: ServeSpec,
    host: str,
    port: int,
    *,
    address: str | None = None,
    api_key: str | None = None,
    app_name: str = APP_NAME,
) -> str:
    """Start (or connect to) Ray, start Serve's HTTP proxy, deploy the app; return its URL.

    Returns when the app is running; raises JobError with the reason when it cannot start.
    """
    from ray import serve

    from earmark.resources import init_ray
    from earmark.serve.app import build_application

    size = init_ray(address, spec.resources)
    check_serve_plan(spec, size)
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(
            build_application(spec, api_key=api_key),
            name=app_name,
            route_prefix="/",
            blocking=False,
        )
    except Exception as exc:  # a replica constructor failed (e.g. the model cannot load)
        raise JobError(f"the Serve application did not start: {_first_line(exc)}") from exc
    wait_ready(app_name)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}"


def wait_ready(app_name: str = APP_NAME, timeout_s: float = READY_TIMEOUT_S) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(app_name)
        state = str(getattr(app, "status", ""))
        if state.endswith("RUNNING"):
            return
        if state.endswith("DEPLOY_FAILED") or state.endswith("UNHEALTHY"):
            raise JobError(f"the Serve application failed: {getattr(app, 'message', '')[:2000]}")
        if time.monotonic() > deadline:
            raise JobError(f"the Serve application was not ready after {timeout_s:.0f} s")
        time.sleep(READY_POLL_S)


def stop(*, app_name: str = APP_NAME, remote: bool = False) -> None:
    """On a cluster: delete our app only. Locally: stop Serve (replicas drain within
    graceful_shutdown_timeout_s), then the embedded Ray."""
    import ray
    from ray import serve

    try:
        if remote:
            serve.delete(app_name)
        else:
            serve.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()


def run_until_stopped(
    spec: ServeSpec,
    host: str,
    port: int,
    *,
    address: str | None = None,
    on_ready: Callable[[str], Any] = print,
) -> None:
    """`earmark serve`: start, report the URL, block until SIGINT/SIGTERM, shut down cleanly."""
    stop_event = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        stop_event.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        on_ready(start(spec, host, port, address=address))
        while not stop_event.wait(1.0):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        stop(remote=address is not None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # Ray wraps the replica's exception; its last line names the cause
    return (lines[-1] if lines else type(exc).__name__)[:500]
