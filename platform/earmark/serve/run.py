"""Run the endpoint (`earmark serve`) on an embedded Ray or on a cluster, until Ctrl-C or SIGTERM,
then undo exactly what this process did there.

On a cluster shared with others, stopping deletes the app this process deployed, and shuts Serve
down only if this process started it and no other app runs there: another user's app, and the
Serve they share, stay up. Locally that is always the case, so Serve and the embedded Ray stop.

Serve fixes its HTTP host and port when it starts, for every app on the cluster, and only logs a
warning when a later `serve.start` asks for others. So a running Serve listening elsewhere is
refused here with the port to use, instead of printing a URL nothing answers on.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from earmark.contracts import JobError
from earmark.serve.config import APP_NAME, ServeSpec, check_serve_plan

READY_TIMEOUT_S = 600.0  # model download/load on a cold machine can take minutes
READY_POLL_S = 0.5
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass
class ServeSession:
    """What this process did on the cluster, recorded as it happens, so that stopping (even
    half-way through starting) undoes exactly that and nothing of anyone else's."""

    app_name: str = APP_NAME
    started_serve: bool = False  # Serve was not running before this process started it
    deployed: bool = False  # serve.run was called for app_name
    url: str = ""


@dataclass(frozen=True)
class HttpEndpoint:
    host: str
    port: int


def resolve_endpoint(
    host: str | None, port: int | None, running: HttpEndpoint | None
) -> HttpEndpoint:
    """Where the app will answer: the requested host and port (defaults 127.0.0.1:8000), or
    a running Serve's when none are asked for; refuses a request a running Serve cannot meet."""
    if running is None:
        return HttpEndpoint(host or DEFAULT_HOST, port or DEFAULT_PORT)
    wanted = HttpEndpoint(host or running.host, port or running.port)
    if wanted != running:
        raise JobError(
            f"Ray Serve is already running on this cluster and listens on "
            f"{running.host}:{running.port}; Serve fixes its HTTP host and port when it starts, "
            f"for every app on the cluster, so it cannot also listen on {wanted.host}:"
            f"{wanted.port}. Run earmark serve with --port {running.port}"
            f"{'' if wanted.host == running.host else f' --host {running.host}'} to add this "
            "model there, or, if no one else on the cluster uses Serve, stop it with "
            "`serve shutdown --address http://HEAD:8265` and run this again."
        )
    return wanted


def check_app_free(app_name: str, apps: dict[str, Any], *, replace: bool) -> None:
    """Refuse to overwrite an app of the same name: on a shared cluster it is someone's
    running endpoint, and stopping this process would then delete it too."""
    if app_name not in apps or replace:
        return
    state = str(getattr(apps[app_name], "status", "")).rsplit(".", 1)[-1]
    raise JobError(
        f"an application named {app_name!r} is already deployed on this cluster's Serve "
        f"({state}): another earmark serve runs there, or one was killed before it could "
        "delete it. Stop that one, or pass --replace to replace it with this model."
    )


def running_endpoint() -> HttpEndpoint | None:
    """The HTTP host and port of the Serve already running on the connected cluster, if any."""
    # Ray has no public call for this: serve.status() omits it, and serve.start only warns
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    http = client.http_config
    return HttpEndpoint(str(http.host), int(http.port))


def connect(spec: ServeSpec, address: str | None) -> None:
    """Start the embedded Ray or connect to a cluster; refuse a plan it cannot place."""
    from earmark.compute.resources import init_ray

    check_serve_plan(spec, init_ray(address, spec.resources))


def deploy(
    spec: ServeSpec,
    host: str | None,
    port: int | None,
    session: ServeSession,
    *,
    api_key: str | None = None,
    replace: bool = False,
) -> str:
    """Start Serve's HTTP proxies (or join the running ones), deploy the app, wait until it
    runs; returns its URL. Raises JobError with the reason when it cannot start."""
    from ray import serve

    from earmark.serve.app import build_application

    running = running_endpoint()
    where = resolve_endpoint(host, port, running)
    if running is not None:
        check_app_free(session.app_name, serve.status().applications, replace=replace)
    else:
        session.started_serve = True  # set first: an interrupted start is still cleaned up
        serve.start(http_options={"host": where.host, "port": where.port})
    session.deployed = True
    try:
        serve.run(
            build_application(spec, api_key=api_key),
            name=session.app_name,
            route_prefix="/",
            blocking=False,
        )
    except Exception as exc:  # a replica constructor failed (e.g. the model cannot load)
        raise JobError(f"the Serve application did not start: {_first_line(exc)}") from exc
    wait_ready(session.app_name)
    shown = "127.0.0.1" if where.host in ("0.0.0.0", "::") else where.host
    session.url = f"http://{shown}:{where.port}"
    return session.url


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


def stop(session: ServeSession, log: Callable[[str], Any] = print) -> None:
    """Delete this process's app; shut Serve down if this process started it and no other app
    runs there (locally: always; Serve drains replicas within graceful_shutdown_timeout_s);
    then disconnect from Ray (locally: stop it)."""
    import ray
    from ray import serve

    try:
        if ray.is_initialized() and (session.deployed or session.started_serve):
            others = sorted(a for a in serve.status().applications if a != session.app_name)
            if session.started_serve and not others:
                serve.shutdown()
                log("deleted the app and shut Serve down (this command started it)")
            elif session.deployed:
                serve.delete(session.app_name)
                why = f"other apps: {', '.join(others)}" if others else "it ran before this command"
                log(f"deleted app {session.app_name!r}; Serve stays up ({why})")
    finally:
        if ray.is_initialized():
            ray.shutdown()


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt in the main thread while inside: a stop
    during a minutes-long model load must not wait for it. Ray's own SIGTERM handler, set by
    ray.init, would exit without cleaning up; the previous handlers come back on exit."""

    def _raise(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_until_stopped(
    spec: ServeSpec,
    host: str | None,
    port: int | None,
    *,
    address: str | None = None,
    replace: bool = False,
    on_ready: Callable[[str], Any] = print,
    log: Callable[[str], Any] = print,
) -> None:
    """`earmark serve`: start, report the URL, block until SIGINT/SIGTERM, clean up."""
    session = ServeSession()
    try:
        connect(spec, address)
        with _signals_interrupt():
            try:
                on_ready(deploy(spec, host, port, session, replace=replace))
                while True:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass
    finally:
        stop(session, log)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # Ray wraps the replica's exception; its last line names the cause
    return (lines[-1] if lines else type(exc).__name__)[:500]
