"""Progress in a job's log (not a terminal): one line per interval and one final line, never the same
state twice."""

from __future__ import annotations

import logging

import pytest

from semtok.utils import progress as progress_module
from semtok.utils.progress import LogProgress


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "semtok.progress"]


@pytest.fixture
def clock(monkeypatch):
    """A controllable `time.monotonic` for the progress module."""
    now = {"t": 1000.0}
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now["t"])
    return now


def test_one_line_per_interval_and_one_at_the_end(caplog, clock, monkeypatch):
    monkeypatch.setenv("SEMTOK_PROGRESS_SECONDS", "10")
    caplog.set_level(logging.INFO, logger="semtok.progress")
    with LogProgress(total=5, desc="job", unit="step") as bar:
        for _ in range(4):
            clock["t"] += 4.0  # a line after the 3rd step (12 s), none after the 4th (16 s)
            bar.update()
    got = lines(caplog)
    assert [line.split(",")[0] for line in got] == ["job: 3/5 step (60.0%)", "job: 4/5 step (80.0%)"]
    assert "eta" in got[0]


def test_the_last_state_is_not_written_twice(caplog, clock, monkeypatch):
    """A single long iteration (a sampling job's one batch) reports at its update and not again at close."""
    monkeypatch.setenv("SEMTOK_PROGRESS_SECONDS", "60")
    caplog.set_level(logging.INFO, logger="semtok.progress")
    for _ in LogProgress(range(1), desc="sample", unit="it"):
        clock["t"] += 125.0
    assert [line.split(",")[0] for line in lines(caplog)] == ["sample: 1/1 it (100.0%)"]


def test_nothing_done_writes_nothing_unless_the_total_is_zero(caplog, clock):
    caplog.set_level(logging.INFO, logger="semtok.progress")
    LogProgress(total=3, desc="idle").close()
    assert lines(caplog) == []
    LogProgress(total=0, desc="empty").close()
    assert [line.split(",")[0] for line in lines(caplog)] == ["empty: 0 it"]
