"""The node watcher stops a job whose plan the alive nodes can no longer run (no Ray here: the
node list is a function the test changes, the job a thread waiting as Ray Data's iterator does)."""

from __future__ import annotations

import os
import queue
import sys
import threading
import time

import pytest

from earmark.batch.watch import WAKE_SIGNAL, NodeLossError, NodeWatch
from earmark.compute.placement import NodeResources
from earmark.contracts import ResourceSpec

HEAD = NodeResources("head0000aaaa", "10.0.0.1", 1, head=True)
WORKER = NodeResources("work0000bbbb", "10.0.0.2", 1)
POLL_S = 0.05
DEADLINE_S = 10.0


class Job:
    """A thread that starts a watcher and then waits, as run_job does inside Ray Data's iterator
    (which wakes every 0.5 s); records how it ended."""

    def __init__(self, spec: ResourceSpec, nodes: list, progress=None, wait_s: float = DEADLINE_S):
        self.spec, self.nodes, self.progress, self.wait_s = spec, nodes, progress, wait_s
        self.said: list[str] = []
        self.raised: BaseException | None = None
        self.watch: NodeWatch | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.watch = NodeWatch(
                self.spec,
                True,
                self.progress,
                nodes=lambda: list(self.nodes),
                say=self.said.append,
                poll_s=POLL_S,
                frame=sys._getframe(),  # this function is the job: the watcher lives while it runs
            )
            self.watch.start()
            self.started.set()
            deadline = time.monotonic() + self.wait_s
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except NodeLossError as exc:
            self.raised = exc

    def start(self) -> Job:
        self.thread.start()
        assert self.started.wait(DEADLINE_S)
        return self


def wait_for(condition, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_a_lost_node_that_breaks_the_plan_is_said_then_stops_the_job():
    nodes = [HEAD, WORKER]
    job = Job(ResourceSpec(node_loss_grace_s=0.5), nodes).start()
    nodes.remove(WORKER)
    job.thread.join(DEADLINE_S)
    assert not job.thread.is_alive() and isinstance(job.raised, NodeLossError)
    warning, final = job.said
    assert warning.startswith("the cluster lost node work0000 (10.0.0.2): 1 CPU; this plan")
    assert "no node keeps 1 CPU for a decode task" in warning
    assert warning.endswith("Waiting up to 0.5 s for nodes (an autoscaler may add them).")
    assert final == "no node came back in 0.5 s: stopping the job"
    error = str(job.raised)
    assert error == job.watch.error
    assert error.startswith("the cluster lost node work0000 (10.0.0.2): 1 CPU and no node came")
    assert "no node came back in 0.5 s (resources.node_loss_grace_s)" in error
    assert "no node keeps 1 CPU for a decode task" in error
    assert "rerun the job once the cluster has the nodes to resume it" in error


def test_nodes_coming_back_within_the_grace_period_let_the_job_go_on():
    nodes = [HEAD, WORKER]
    job = Job(ResourceSpec(node_loss_grace_s=60), nodes, wait_s=2).start()
    nodes.remove(WORKER)
    wait_for(lambda: job.said)
    nodes.append(NodeResources("new00000cccc", "10.0.0.3", 2))  # an autoscaler added one
    job.thread.join(DEADLINE_S)
    assert job.raised is None and job.watch.error is None
    assert job.said[-1] == "the alive nodes can run the plan again; the job goes on"


def test_a_job_that_still_finishes_files_is_not_stopped_until_it_stalls():
    nodes, done = [HEAD, WORKER], [0]
    job = Job(ResourceSpec(node_loss_grace_s=0.3), nodes, progress=lambda: done[0]).start()
    nodes.remove(WORKER)
    wait_for(lambda: job.said)
    moving_until = time.monotonic() + 1.0  # three grace periods of files still being finished
    while time.monotonic() < moving_until:
        done[0] += 1
        time.sleep(0.05)
    assert job.raised is None and job.thread.is_alive()
    job.thread.join(DEADLINE_S)  # then it stalls: stopped one grace period later
    assert isinstance(job.raised, NodeLossError) and len(job.said) == 2


def test_the_watcher_ends_with_the_job_and_never_interrupts_later_code():
    nodes = [HEAD, WORKER]
    job = Job(ResourceSpec(node_loss_grace_s=0), nodes, wait_s=0.2).start()
    job.thread.join(DEADLINE_S)
    nodes.remove(WORKER)  # after the job: nobody to stop
    wait_for(lambda: not job.watch._thread.is_alive())
    assert job.raised is None and job.watch.error is None and job.said == []


def test_in_the_main_thread_a_wait_that_nothing_wakes_is_interrupted():
    # run_job in the CLI waits in Ray Data's iterator on a plain queue.get(): an exception set
    # from another thread would never be seen, a signal interrupts the wait
    nodes, q = [HEAD, WORKER], queue.Queue()
    said: list[str] = []
    watch = NodeWatch(ResourceSpec(node_loss_grace_s=0), True, nodes=lambda: list(nodes),
                      say=said.append, poll_s=POLL_S, frame=sys._getframe())  # fmt: skip
    safety = threading.Timer(DEADLINE_S, q.put, args=("not interrupted",))
    safety.start()
    try:
        watch.start()
        nodes.remove(WORKER)
        with pytest.raises(NodeLossError, match="no node came back in 0 s"):
            q.get()
    finally:
        safety.cancel()
    assert said[-1] == "no node came back in 0 s: stopping the job" and watch.error
    os.kill(os.getpid(), WAKE_SIGNAL)  # the handler stays, and does nothing once it has raised


def test_a_stop_that_arrives_after_the_job_ended_is_dropped():
    def job() -> NodeWatch:  # returns before the watcher's signal lands
        return NodeWatch(ResourceSpec(), True, nodes=lambda: [HEAD], say=lambda _: None,
                         frame=sys._getframe())  # fmt: skip

    watch = job()
    watch.error, watch._pending = "too late", True
    os.kill(os.getpid(), WAKE_SIGNAL)  # would raise NodeLossError here if it were not dropped
    assert watch._pending is False
