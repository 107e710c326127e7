"""Process plumbing shared by the training loop, the data loader, the fork server and the launcher (POSIX; the
parent-death signal is Linux-only and silently skipped elsewhere)."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

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
