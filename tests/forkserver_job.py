"""A test-only command for tests/test_forkserver.py: a fork server started with `--preload
forkserver_job` (this folder on PYTHONPATH) knows `semtok sleep --pid-file FILE`, a long job that
writes its pid and sleeps, to kill things around."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from semtok.cli import dispatch
from semtok.jobs import EntryPoint

dispatch.COMMANDS["sleep"] = dispatch.Command(
    __name__, "test only: write the pid to --pid-file, then sleep", needs_config=False
)


def sleep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid-file", required=True)


def sleep(args: argparse.Namespace, _cfg: object) -> None:
    Path(args.pid_file).write_text(str(os.getpid()))
    time.sleep(600)


dispatch.COMMANDS["threads"] = dispatch.Command(
    __name__, "test only: write torch's CPU thread count to --output", needs_config=True
)


def threads_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True)


def threads(args: argparse.Namespace, _cfg: object) -> None:
    import torch

    Path(args.output).write_text(str(torch.get_num_threads()))


ENTRY_POINTS = {
    "sleep": EntryPoint(sleep_arguments, sleep),
    "threads": EntryPoint(threads_arguments, threads),
}
