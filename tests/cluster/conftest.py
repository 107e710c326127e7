"""A real Slurm on this machine for the tests marked `slurm` (scripts/slurm/start.sh): `slurm` is the
one-node layout, `slurm2` two nodes (two slurmd, one CPU each). A module asking for the other layout
restarts the daemons (seconds); the session stops them at its end unless they ran before it.

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
def slurm_session() -> Iterator[None]:
    """Root and Slurm (or apt-get) present; stops the daemons at the end unless they ran before."""
    if os.geteuid() != 0:
        pytest.skip("starting a Slurm needs root (scripts/slurm/start.sh)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    was_up = _controller_up()
    yield
    if not was_up:
        subprocess.run([SCRIPTS / "stop.sh"], check=True)


def start(nodes: int) -> None:
    subprocess.run([SCRIPTS / "start.sh"], check=True, env={**os.environ, "SEMTOK_SLURM_NODES": str(nodes)})


@pytest.fixture(scope="module")
def slurm(slurm_session: None) -> None:
    """The one-node Slurm (this machine, all its CPUs), installed if needed."""
    start(1)


@pytest.fixture(scope="module")
def slurm2(slurm_session: None) -> list[str]:
    """A two-node Slurm (HOST-1, HOST-2: one slurmd and one CPU each); returns the node names."""
    start(2)
    names = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True, check=True)
    return sorted(set(names.stdout.split()))
