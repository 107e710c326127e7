"""Process plumbing shared by the training loop, the data loader, the fork server and the launcher (POSIX; the
parent-death signal is Linux-only and silently skipped elsewhere)."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Slurm's warning before a time limit (the profile asks for SIGUSR1) and its preemption/scancel signal:
# a training job checkpoints on either and exits with 75.
CHECKPOINT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CHECKPOINTED = 75  # EX_TEMPFAIL: checkpointed on a signal; the scheduler should retry/requeue
EXIT_DIVERGED = 3  # a training loss became non-finite: nothing exported (a retry diverges again)


def die_with_parent(signum: int, parent: int) -> None:
    """Have the kernel send `signum` to this process when its parent exits (prctl PR_SET_PDEATHSIG),
    and send it now if `parent` (the pid the parent had before the fork) is already gone."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return
    prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


@contextmanager
def held_signals(signals: Iterable[int]) -> Iterator[None]:
    """Block `signals` in this thread while the block runs; they are delivered (and their Python
    handlers run) when it ends. Processes forked meanwhile start with them blocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# ---------------------------------------------------------------------------------------------
# The checkpoint signals over a job's life


@dataclass
class _SignalState:
    installed: bool = False  # `install_job_handler` ran: this process is a job
    deferred: bool = False  # a trainer acts on them: only noted
    finished: bool = False  # the job's output is complete: ignored
    received: int | None = None


_STATE = _SignalState()


def _on_checkpoint_signal(signum: int, _frame: object) -> None:
    _STATE.received = signum
    if not (_STATE.deferred or _STATE.finished):
        raise SystemExit(EXIT_CHECKPOINTED)


def install_job_handler() -> None:
    """Handle SIGTERM and SIGUSR1 for the rest of this process's life (a `semtok` command's own
    process): until a trainer takes them over, a signal ends the job with 75 at once (start-up, and
    jobs whose outputs appear atomically: nothing is lost, the scheduler retries); while a trainer
    defers them (`deferred_signals`: resume, training, export) it is noted and the trainer checkpoints
    and exits 75; once the job's output is complete (`job_finished`) it is ignored, so that a finished
    job exits 0 instead of dying between printing its result and exiting."""
    _STATE.installed, _STATE.deferred, _STATE.finished, _STATE.received = True, False, False, None
    for signum in CHECKPOINT_SIGNALS:
        signal.signal(signum, _on_checkpoint_signal)


def received_signal() -> int | None:
    """The checkpoint signal noted while deferred (None: none)."""
    return _STATE.received


@contextmanager
def deferred_signals() -> Iterator[None]:
    """While the block runs a checkpoint signal is only noted (`received_signal`); the caller acts on it
    at a safe point. In a job (`install_job_handler`) they stay deferred after the block: what follows is
    the trainer's own saving and reporting. Elsewhere (a library call) the block starts with no signal
    noted and the previous handlers come back after it."""
    if _STATE.installed:
        _STATE.deferred = True
        yield
        return
    previous = {signum: signal.signal(signum, _on_checkpoint_signal) for signum in CHECKPOINT_SIGNALS}
    _STATE.deferred, _STATE.received = True, None
    try:
        yield
    finally:
        _STATE.deferred = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def job_finished() -> None:
    """The job's declared output is complete: in a job, a checkpoint signal from now on is ignored."""
    if _STATE.installed:
        _STATE.finished = True
