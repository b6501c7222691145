"""Watch the cluster's nodes while a job runs: a lost node can leave a plan that never finishes.

The plan is checked node by node before the job starts (`earmark.placement`). When a node dies
during the job, Ray retries its tasks and restarts its actors elsewhere, and if the nodes left
cannot run the plan (the head's only CPU held by the Annotator, the decode tasks' node gone) it
waits for resources forever: the job hangs without a word. This thread re-runs the per-node
check on the alive nodes every few seconds. When the plan no longer fits it says so in the job's
log at once and, if no file is finished for `resources.node_loss_grace_s` (an autoscaler may add
nodes meanwhile; a job that still moves is left alone), it stops the job with a JobError.

How it stops the job: the thread that called `watch_nodes` (run_job's) is blocked in Ray Data's
iterator, in a plain `queue.get()` that nothing wakes while the job hangs. The watcher raises
`NodeLossError`, a JobError carrying the message, in that thread, so run_job's own
`except JobError: raise` ends the job and the CLI prints the message without a traceback. In the
main thread (the CLI) it sends the thread a signal whose handler raises it: a signal interrupts
the blocked wait, while an exception set from another thread waits until the queue yields (on a
two-node cluster with a dead node it never did). SIGINT cannot serve, Ray blocks it in job
drivers; earmark uses SIGUSR2, which Ray's drivers leave alone. In any other thread it uses
CPython's PyThreadState_SetAsyncExc, delivered when that thread next runs Python code. Either way
only while the calling function is still running: the watcher ends by itself once that frame
has left the stack.
"""

from __future__ import annotations

import ctypes
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from earmark.compute.placement import NodeResources, from_ray_nodes, node_plan_problem
from earmark.contracts import JobError, ResourceSpec

POLL_S = 3.0  # Ray itself marks a dead node after ~15 s of failed health checks
PREFIX = "earmark cluster:"
WAKE_SIGNAL = signal.SIGUSR2


class NodeLossError(JobError):
    """The alive nodes can no longer run the job's plan, and nodes did not come back."""

    message = "the cluster lost nodes and can no longer run this plan"

    def __init__(self, *args: object) -> None:
        # raised asynchronously as a class (no arguments can travel): the message is the class's
        super().__init__(*(args or (self.message,)))


def _say(line: str) -> None:
    # flushed at once: Ray copies the driver's output into the job's logs as it is written
    print(f"{PREFIX} {line}", file=sys.stderr, flush=True)


class NodeWatch:
    """A daemon thread polling `ray.nodes()`; `error` holds the message once it stopped the job."""

    def __init__(
        self,
        spec: ResourceSpec,
        with_model: bool,
        progress: Callable[[], int] | None = None,
        *,
        nodes: Callable[[], list[NodeResources]] | None = None,
        say: Callable[[str], object] = _say,
        poll_s: float = POLL_S,
        frame: FrameType | None = None,
    ) -> None:
        self.spec, self.with_model, self.progress = spec, with_model, progress
        self.nodes, self.say, self.poll_s = nodes or _alive_nodes, say, poll_s
        self.error: str | None = None
        self.target = threading.get_ident()  # the thread to stop
        self.frame = frame  # while this frame is on that thread's stack, the job runs
        try:
            self.seen = {n.node_id: n for n in self.nodes()}
        except Exception:  # watching is a help, never a reason to fail the job
            self.seen = {}
        self._pending = False  # the error is set and not yet raised in the target thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="earmark-node-watch", daemon=True)
        self._signal = threading.current_thread() is threading.main_thread()
        if self._signal:
            self._install_handler()

    def _install_handler(self) -> None:
        previous = signal.getsignal(WAKE_SIGNAL)

        def wake(signum: int, frame: FrameType | None) -> None:
            if self._pending:
                self._pending = False
                # the job may have ended since the watcher looked: then nothing is raised
                if self.frame is not None and _on_stack(frame, self.frame):
                    raise NodeLossError(self.error)
                return
            if callable(previous):  # an earlier job's handler, or someone else's
                previous(signum, frame)

        # left in place after the job: it does nothing once its error has been raised
        signal.signal(WAKE_SIGNAL, wake)

    def start(self) -> NodeWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        since: float | None = None  # when the plan stopped fitting (None: it fits)
        done = self._done()
        while not self._stop.wait(self.poll_s):
            if not self._job_running():
                return
            try:
                alive = self.nodes()
            except Exception:  # the GCS is restarting or this driver is shutting down
                continue
            lost = [n for nid, n in self.seen.items() if nid not in {a.node_id for a in alive}]
            self.seen.update({n.node_id: n for n in alive})
            problem = node_plan_problem(self.spec, alive, with_model=self.with_model)
            now_done = self._done()
            if problem is None:
                if since is not None:
                    self.say("the alive nodes can run the plan again; the job goes on")
                since = None
                continue
            cause = f"the cluster lost {_names(lost)}" if lost else "the alive nodes changed"
            if since is None or now_done != done:  # first notice, or files still get finished
                if since is None:
                    self.say(
                        f"{cause}; {problem.rstrip('.')}. Waiting up to "
                        f"{self.spec.node_loss_grace_s:g} s for nodes (an autoscaler may add them)."
                    )
                since, done = time.monotonic(), now_done
            if time.monotonic() - since >= self.spec.node_loss_grace_s:
                self._fail(
                    f"{cause} and no node came back in {self.spec.node_loss_grace_s:g} s "
                    f"(resources.node_loss_grace_s): {problem.rstrip('.')}. Rows written so far "
                    "are kept; rerun the job once the cluster has the nodes to resume it."
                )
                return

    def _done(self) -> int:
        try:
            return self.progress() if self.progress is not None else 0
        except Exception:
            return 0

    def _job_running(self) -> bool:
        if self.frame is None:
            return True
        if _on_stack(sys._current_frames().get(self.target), self.frame):
            return True
        self.frame = None  # let the finished job's frame go
        return False

    def _fail(self, message: str) -> None:
        self.error = message
        # the message itself ends the job (the CLI prints it); the log says when that happened
        self.say(f"no node came back in {self.spec.node_loss_grace_s:g} s: stopping the job")
        if self._signal:
            self._pending = True
            signal.pthread_kill(self.target, WAKE_SIGNAL)
            return
        exc = type("NodeLossError", (NodeLossError,), {"message": message})
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(self.target), ctypes.py_object(exc)
        )


def watch_nodes(
    spec: ResourceSpec, with_model: bool, progress: Callable[[], int] | None = None
) -> NodeWatch:
    """Start watching while the calling function runs (run_job: one line, after the plan check).
    `progress` returns the files finished so far: while it grows the job is not stopped."""
    return NodeWatch(spec, with_model, progress, frame=sys._getframe(1)).start()


def _on_stack(top: FrameType | None, frame: FrameType) -> bool:
    while top is not None:
        if top is frame:
            return True
        top = top.f_back
    return False


def _alive_nodes() -> list[NodeResources]:
    import ray

    return from_ray_nodes(ray.nodes())


def _names(lost: list[NodeResources]) -> str:
    described = ", ".join(f"{n.label}: {n.shape()}" for n in lost)
    return f"node{'s' if len(lost) > 1 else ''} {described}"
