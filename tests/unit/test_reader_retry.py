"""earmark's own read retry: a transient failure is retried, a permanent one is not."""

from __future__ import annotations

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from earmark.audio.fetch import read_and_decode
from earmark.contracts import EarmarkError, ErrorKind, LimitsSpec
from paths import DEMO


class FlakyMemoryFS(MemoryFileSystem):
    """In-memory files whose first `fail_times` opens raise a connection reset."""

    protocol = "flakymem"
    opens = 0
    fail_times = 0
    error: type[Exception] = ConnectionResetError

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("flakymem://", "memory://", 1))

    def _open(self, path, mode="rb", **kw):
        type(self).opens += 1
        if type(self).opens <= type(self).fail_times:
            raise type(self).error("connection reset by peer")
        return super()._open(path, mode, **kw)


fsspec.register_implementation("flakymem", FlakyMemoryFS, clobber=True)


@pytest.fixture
def flaky():
    FlakyMemoryFS.fail_times = 0
    fs = FlakyMemoryFS()
    fs.pipe("/clips/fox.wav", (DEMO / "s01_fox.wav").read_bytes())
    FlakyMemoryFS.opens = 0
    yield FlakyMemoryFS
    FlakyMemoryFS.fail_times = 0
    fs.rm("/clips", recursive=True)


def test_transient_errors_are_retried(flaky):
    flaky.fail_times, flaky.error = 2, ConnectionResetError
    audio = read_and_decode("flakymem:///clips/fox.wav", None, LimitsSpec(read_retries=3))
    assert audio.duration_s > 4 and flaky.opens == 3


def test_retries_run_out_with_a_message(flaky):
    flaky.fail_times, flaky.error = 10, ConnectionResetError
    with pytest.raises(EarmarkError) as ei:
        read_and_decode("flakymem:///clips/fox.wav", None, LimitsSpec(read_retries=2))
    assert ei.value.kind == ErrorKind.UNREACHABLE and "after 3 attempts" in ei.value.message
    assert flaky.opens == 3


def test_permission_denied_is_not_retried(flaky):
    flaky.fail_times, flaky.error = 10, PermissionError
    with pytest.raises(EarmarkError) as ei:
        read_and_decode("flakymem:///clips/fox.wav", None, LimitsSpec(read_retries=5))
    assert ei.value.kind == ErrorKind.PERMISSION_DENIED and flaky.opens == 1
