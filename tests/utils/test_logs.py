"""The logging setup of a command run in-process (a notebook, a test runner) outlives the stderr it
started with."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from semtok.utils import logs


@pytest.fixture
def root_handlers(monkeypatch):
    monkeypatch.delenv(logs.JOB_LOG, raising=False)  # not a workflow job: streams are left as they are
    root = logging.getLogger()
    saved, level = root.handlers[:], logging.getLogger("semtok").level
    yield
    root.handlers = saved
    logging.getLogger("semtok").setLevel(level)


def test_records_go_to_the_stderr_of_the_moment_not_a_closed_one(root_handlers, monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logs.stamp_streams()
    logging.getLogger("semtok.x").info("while the command runs")
    assert "INFO semtok.x: while the command runs" in first.getvalue()

    # the command returns; its caller closes the stream it captured and moves on to another
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    errors = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: errors.append(record))
    logging.getLogger("semtok.progress").info("%s", "synthetic val: 12/12 img")
    assert errors == []
    assert "INFO semtok.progress: synthetic val: 12/12 img" in second.getvalue()


def test_the_handler_ignores_a_stream_assigned_to_it(root_handlers, monkeypatch):
    handler = logs.CurrentStderrHandler()
    handler.setStream(io.StringIO())  # what StreamHandler's API offers; the handler follows sys.stderr
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    handler.emit(logging.LogRecord("semtok", logging.INFO, __file__, 1, "hello", None, None))
    assert now.getvalue() == "hello\n"
