"""`semtok <command>` (console script, `python -m semtok.cli`): every computation of the workflow is
one of the commands of `semtok.cli.dispatch`. In a local workflow run served by a fork server
(`semtok.cli.forkserver`) the command runs in a warm forked process, otherwise in this one.

`entry` is the process's own entry point: it handles the checkpoint signals for the process's whole
life (`semtok.utils.process.install_job_handler`); `main` runs a command and can be called in-process."""

from __future__ import annotations

import sys

from semtok.cli import dispatch
from semtok.cli.forkserver import delegate
from semtok.utils import logs
from semtok.utils.process import install_job_handler


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    owner = logs.claim(argv)
    status = 1
    try:
        status = delegate(argv)
        if status is None:
            status = dispatch.run(argv)
        return status
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        raise
    finally:
        logs.release(owner, status)


def entry() -> int:
    """The console script and `python -m semtok.cli`: this process is the job's."""
    install_job_handler()
    return main()
