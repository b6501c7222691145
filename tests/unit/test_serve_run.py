"""`earmark serve` against a Serve that may already run on the cluster: which host and port
the app answers on, and when it is refused (the real cluster case: tests/integration)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from earmark.contracts import JobError
from earmark.serve.run import HttpEndpoint, check_app_free, resolve_endpoint

RUNNING = HttpEndpoint("0.0.0.0", 8123)


def test_without_a_running_serve_the_request_or_the_defaults_apply():
    assert resolve_endpoint(None, None, None) == HttpEndpoint("127.0.0.1", 8000)
    assert resolve_endpoint("0.0.0.0", 9000, None) == HttpEndpoint("0.0.0.0", 9000)


def test_a_running_serve_is_joined_when_the_request_matches_or_is_left_out():
    assert resolve_endpoint(None, None, RUNNING) == RUNNING
    assert resolve_endpoint(None, 8123, RUNNING) == RUNNING
    assert resolve_endpoint("0.0.0.0", None, RUNNING) == RUNNING


def test_another_port_is_refused_with_the_port_to_use():
    with pytest.raises(JobError) as err:
        resolve_endpoint(None, 9000, RUNNING)
    msg = str(err.value)
    assert "listens on 0.0.0.0:8123" in msg and "cannot also listen on 0.0.0.0:9000" in msg
    assert "--port 8123 to add" in msg and "--host" not in msg and "serve shutdown" in msg


def test_another_host_is_refused_with_the_host_to_use():
    with pytest.raises(JobError, match="--port 8123 --host 0.0.0.0"):
        resolve_endpoint("127.0.0.1", None, RUNNING)


def test_an_app_of_the_same_name_is_not_overwritten_unless_asked():
    apps = {"earmark": SimpleNamespace(status="ApplicationStatus.RUNNING"), "other": None}
    with pytest.raises(JobError, match=r"'earmark' is already deployed .*\(RUNNING\).*--replace"):
        check_app_free("earmark", apps, replace=False)
    check_app_free("earmark", apps, replace=True)
    check_app_free("earmark", {"other": None}, replace=False)
