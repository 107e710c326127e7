"""One logging setup for every job: timestamps on every line, and the history of failed attempts.

It applies to the jobs of the workflow, whose commands name their log in `SEMTOK_JOB_LOG` (the rules'
`cli()`/`launch()` prefixes, workflow/rules/common.smk); a command run by hand writes its output as it
is (`semtok resolve-config > settings.yaml` stays YAML).

- Every process of a job writes through `stamp_streams()`: in a log file (not a terminal) each line of
  stdout and stderr starts with the time (`2026-12-06 21:30:05 `), the line of a process other than
  rank 0 also with `[rank N]`; Python's logging writes `LEVEL logger: message` through it. Progress is
  semtok/utils/progress.py's (a line at a fixed interval in a log).
- Attempts: Snakemake deletes a job's log before each attempt, so a retried job would lose why the
  last one failed. The job whose stdout is its log also appends every line to a history file
  `<log folder>/.attempts/<log name>`; an attempt starts by copying that history back into the fresh
  log and writing a header naming the attempt (`===== attempt 2 of semtok stage1 ... =====`, with
  host, Slurm job and time); a job that succeeds removes the history, so the next run of the job (new
  settings) is attempt 1 again.
- One process owns the log (`claim()`): the first semtok process of the job (the launcher when it starts
  several processes, else the command itself, also when a fork server runs it); it writes the header
  and, on success, removes the history.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import TextIO

OWNER = "SEMTOK_LOG_OWNER"  # set once a process of the job owns its log
JOB_LOG = "SEMTOK_JOB_LOG"  # the log a workflow job writes to (its stdout and stderr)
HEADER = re.compile(r"^(?:\S+ \S+ )?===== attempt (\d+) of ", re.M)


def log_file() -> Path | None:
    """The job's log when this process's stdout goes to it (`> {log}` of a rule), or None (a command run
    by hand, a terminal, a pipe)."""
    named = os.environ.get(JOB_LOG)
    if not named:
        return None
    try:
        target = Path(os.readlink("/proc/self/fd/1"))
    except OSError:  # not Linux: trust the name
        target = Path(named)
    return target if target.is_file() and os.path.samefile(target, named) else None


def history_file(log: Path) -> Path:
    return log.parent / ".attempts" / log.name


def _rank_tag() -> str:
    rank = os.environ.get("RANK", "0")
    return "" if rank in ("", "0") else f"[rank {rank}] "


class StampedStream(io.TextIOBase):
    """A text stream that starts every line with the time (and the rank tag) and copies what it writes
    to the attempt history."""

    def __init__(self, stream: TextIO, history: Path | None) -> None:
        self.stream, self.history = stream, history
        self.tag = _rank_tag()
        self.at_line_start = True

    def write(self, text: str) -> int:
        if not text:
            return 0
        out = []
        for piece in text.splitlines(keepends=True):
            if self.at_line_start:
                out.append(time.strftime("%Y-%m-%d %H:%M:%S ") + self.tag)
            out.append(piece)
            self.at_line_start = piece.endswith(("\n", "\r"))
        stamped = "".join(out)
        self.stream.write(stamped)
        self.stream.flush()
        if self.history is not None:
            _append(self.history, stamped)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def writable(self) -> bool:
        return True


class CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to `sys.stderr` as it is when the record is logged, not as it was when the
    handler was made: a command run in-process (a notebook, a test runner) swaps and closes its stderr,
    and a handler holding the old one would fail on every later record ('I/O operation on closed file')."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler's __init__ and setStream assign it
        pass


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)


def stamp_streams() -> None:
    """In a workflow job's log: timestamped stdout/stderr with the history copy. Everywhere: the
    logging format (with the time in a terminal). Idempotent."""
    log = log_file()
    if log is not None:
        history = history_file(log)
        history.parent.mkdir(parents=True, exist_ok=True)
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, StampedStream):
                setattr(sys, name, StampedStream(stream, history))
    handler = CurrentStderrHandler()
    stamp = "%(asctime)s " if sys.stderr.isatty() else ""
    handler.setFormatter(
        logging.Formatter(f"{stamp}%(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers = [handler]
    logging.getLogger("semtok").setLevel(logging.INFO)


def claim(argv: list[str]) -> bool:
    """Make this process the owner of the job's log unless another process of the job is (see the module
    docstring): bring back the history of earlier failed attempts and write this attempt's header. A
    process that replaced its owner by exec (the launcher of one process) owns the log without a header.
    Call before `stamp_streams`."""
    log = log_file()
    # "pid:log": a value inherited from a process of another job (or none, e.g. a test runner that ran a
    # command in-process) does not make this job's log owned
    owner_pid, _, owned_log = os.environ.get(OWNER, "").partition(":")
    if owner_pid and owned_log == str(log):
        return owner_pid == str(os.getpid())
    os.environ[OWNER] = f"{os.getpid()}:{log}"
    if log is None:
        return True
    history = history_file(log)
    earlier = history.read_text(errors="replace") if history.is_file() else ""
    attempt = len(HEADER.findall(earlier)) + 1
    job = os.environ.get("SLURM_JOB_ID")
    header = (
        f"===== attempt {attempt} of semtok {' '.join(argv)} | host {socket.gethostname()} | pid {os.getpid()}"
        f"{f' | Slurm job {job}' if job else ''} | {time.strftime('%Y-%m-%d %H:%M:%S %Z')} =====\n"
    )
    sys.stdout.flush()
    os.write(1, (earlier + header).encode("utf-8", "replace"))  # through stdout's own file offset
    history.parent.mkdir(parents=True, exist_ok=True)
    _append(history, header)
    return True


def release(owner: bool, status: int) -> None:
    """The job ended with `status`: its owner removes the attempt history after a success."""
    if not owner or status != 0:
        return
    log = log_file()
    if log is not None:
        history_file(log).unlink(missing_ok=True)


def header_attempts(text: str) -> list[int]:
    """The attempt numbers of the headers in a log's text."""
    return [int(n) for n in HEADER.findall(text)]
