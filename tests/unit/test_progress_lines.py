"""Plain progress lines (earmark.batch.progress): the format `earmark jobs status` parses, the
interval from the environment, and the timer that prints them while no batch arrives."""

from __future__ import annotations

import threading

import pytest

from earmark.batch import progress
from earmark.batch.progress import ProgressLines, Snapshot, format_line, latest_line


def test_a_line_has_counts_hours_errors_rates_and_elapsed():
    line = format_line(Snapshot(done=7, total=14, audio_s=1800.0, errors=1, elapsed_s=3725.0))
    assert line == (
        "earmark progress: 7/14 files (50%), 0.500 audio h, 1 errors, 0.00 files/s, "
        "0.5 audio h/wall h, elapsed 1:02:05"
    )


def test_while_the_source_is_listed_the_total_is_a_lower_bound():
    line = format_line(Snapshot(3, 40, 0.0, 0, 1.0, listing=True))
    assert line.startswith("earmark progress: 3/40+ files (listing), 0.000 audio h, 0 errors")
    assert "%" not in line


def test_latest_line_is_the_last_one_in_the_logs():
    logs = "\n".join(
        [
            "earmark job em-1: a -> b",
            format_line(Snapshot(0, 4, 0.0, 0, 0.0)),
            "(Annotator pid=12) a warning",
            "(raylet) " + format_line(Snapshot(3, 4, 9.0, 0, 2.0)),
            "some other line",
        ]
    )
    assert latest_line(logs) == format_line(Snapshot(3, 4, 9.0, 0, 2.0))
    assert latest_line("no progress yet\n") is None


@pytest.mark.parametrize(
    ("raw", "want"), [("", 10.0), ("0.5", 0.5), ("junk", 10.0), ("0", 10.0), ("-1", 10.0)]
)
def test_interval_comes_from_the_environment(monkeypatch, raw, want):
    monkeypatch.setenv(progress.INTERVAL_ENV, raw)
    assert progress.interval_s() == want


def test_lines_are_printed_on_a_timer_without_updates_and_once_at_the_end():
    lines: list[str] = []
    enough = threading.Event()

    def write(line: str) -> None:
        lines.append(line)
        if len(lines) >= 3:
            enough.set()

    with ProgressLines(total=5, interval=0.1, write=write) as p:
        # no update while the timer runs: a slow batch must not silence the job
        assert enough.wait(timeout=30), lines
        p.update(5, 7200.0, 2)
    assert all(ln.startswith("earmark progress: 0/5 files") for ln in lines[:3])
    assert lines[-1].startswith("earmark progress: 5/5 files (100%), 2.000 audio h, 2 errors")


def test_the_last_line_is_printed_when_the_run_fails():
    lines: list[str] = []
    with pytest.raises(RuntimeError), ProgressLines(total=3, interval=60, write=lines.append) as p:
        p.update(1, 0.0, 0)
        raise RuntimeError("decode failed")
    assert [ln.split(" files")[0] for ln in lines] == [
        "earmark progress: 0/3",
        "earmark progress: 1/3",
    ]


def test_the_default_writer_prints_to_stdout(capsys):
    with ProgressLines(total=1, interval=3600) as p:
        pass
    # exit stops the timer thread at once instead of waiting out the hour
    assert not p._thread.is_alive()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(ln.startswith("earmark progress: 0/1 files") for ln in out)
