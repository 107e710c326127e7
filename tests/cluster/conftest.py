"""A real single-node Slurm for the tests marked `slurm` (scripts/slurm/start.sh, once per session).

The tests are skipped only where they cannot run at all: not root, or Slurm neither installed nor
installable with apt-get. Anywhere else (CI runs as root) a Slurm that does not come up is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "slurm"


def _controller_up() -> bool:
    ping = (
        subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
        if shutil.which("scontrol")
        else None
    )
    return ping is not None and ping.returncode == 0 and "UP" in ping.stdout


@pytest.fixture(scope="session")
def job_env() -> dict[str, str]:
    """The environment jobs are submitted from: this interpreter's bin folder (semtok, snakemake)
    first on PATH, so that jobs (sbatch --export=ALL) find the same installation."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def slurm() -> Iterator[None]:
    """Start the single-node Slurm (installing it if needed); stop it at the end of the session
    unless it was already running before."""
    if os.geteuid() != 0:
        pytest.skip("starting a Slurm needs root (scripts/slurm/start.sh)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    was_up = _controller_up()
    subprocess.run([SCRIPTS / "start.sh"], check=True)
    yield
    if not was_up:
        subprocess.run([SCRIPTS / "stop.sh"], check=True)
