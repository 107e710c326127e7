"""The job layer: one module per workflow stage, `workflow/rules/<stage>.smk` ↔ `semtok/jobs/<stage>.py`.

A job module holds the stage's `semtok <command>` entry points: their arguments, which files they
read and write, and their progress output. The computation itself is the library's (`semtok/` outside
`jobs/` and `cli/`), which never imports a job and has no argparse. Jobs never import each other;
`semtok.cli.dispatch` maps every command to the job module whose `ENTRY_POINTS` holds it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NamedTuple


class EntryPoint(NamedTuple):
    """A command of a job module: `arguments(parser)` adds its options, `run(args, cfg)` runs it (cfg:
    the validated config, or None for a command that needs none) and may return a JSON-able summary."""

    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Any], Any]
