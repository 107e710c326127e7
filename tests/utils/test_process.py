"""The checkpoint signals over a job's whole life (semtok/utils/process.py, installed by the `semtok`
process's entry point and by the fork server's child): a real SIGTERM or SIGUSR1 at each moment of a
training job — start-up, resume, training, export, after its result — either checkpoints and exits 75
or lets the finished job exit 0, and the job, rerun, ends with the weights of an undisturbed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import semtok
from semtok.utils.process import EXIT_CHECKPOINTED

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
# `python -m semtok.cli toy-train ...` with the test-only command of tests/signal_job.py registered
RUN = "import sys, signal_job; from semtok.cli.main import entry; sys.exit(entry())"


def environment(server: Path | None = None) -> dict[str, str]:
    path = os.pathsep.join([str(Path(semtok.__file__).parents[1]), str(TESTS)])
    return {**os.environ, "PYTHONPATH": path, "SEMTOK_FORKSERVER": str(server or ""), "OMP_NUM_THREADS": "1"}


def job(
    out: Path, pause: str = "none", sig: int | None = None, server: Path | None = None
) -> tuple[int, str, str]:
    """Run the toy job in a process of its own (through `server` when given); at its pause send `sig`.
    Returns (exit status, stdout, stderr)."""
    argv = ["toy-train", "--config", "config/config.yaml", "--out", str(out), "--pause", pause]
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, *argv],
        cwd=ROOT,
        env=environment(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if sig is not None:
        deadline = time.time() + 300
        while not (out / "paused").exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.01)
        (out / "paused").unlink()
        os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("undisturbed")
    status, stdout, stderr = job(out)
    assert status == 0, stderr[-3000:]
    assert json.loads(stdout)["steps"] == 12
    return weights(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_at_start_up_ends_the_job_with_75_and_nothing_written(tmp_path, sig):
    status, _, stderr = job(tmp_path, "startup", sig)
    assert status == EXIT_CHECKPOINTED, stderr[-3000:]
    assert not (tmp_path / "final").exists() and not (tmp_path / "ckpt").exists()


def test_signals_in_training_and_in_resume_checkpoint_and_the_rerun_ends_undisturbed(tmp_path, undisturbed):
    status, _, stderr = job(tmp_path, "train", signal.SIGTERM)
    assert status == EXIT_CHECKPOINTED, stderr[-3000:]
    assert "checkpointed at step 7 on SIGTERM" in stderr
    status, _, stderr = job(tmp_path, "resume", signal.SIGUSR1)
    assert status == EXIT_CHECKPOINTED, stderr[-3000:]
    assert "resumed from" in stderr and "checkpointed at step 7 on SIGUSR1" in stderr
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-00000004", "step-00000007"]
    status, _, stderr = job(tmp_path)
    assert status == 0, stderr[-3000:]
    assert "step 7)" in stderr and not (tmp_path / "ckpt").exists()
    got = weights(tmp_path)
    assert all(torch.equal(value, got[key]) for key, value in undisturbed.items())


def test_a_signal_during_the_export_lets_the_job_finish(tmp_path, undisturbed):
    status, stdout, stderr = job(tmp_path, "export", signal.SIGTERM)
    assert status == 0, stderr[-3000:]
    assert json.loads(stdout)["steps"] == 12 and not (tmp_path / "ckpt").exists()
    got = weights(tmp_path)
    assert all(torch.equal(value, got[key]) for key, value in undisturbed.items())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A fork server that has imported torch and knows the toy command."""
    sock = tmp_path_factory.mktemp("forkserver") / "s.sock"
    preload = ["semtok.cli.dispatch", "torch", "semtok.train.loop", "signal_job"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "semtok.cli.forkserver", "--socket", str(sock), "--preload", *preload],
        env=environment(),
        cwd=ROOT,
    )
    ready = sock.with_name(sock.name + ".ready")
    deadline = time.time() + 180
    while not ready.exists() or not ready.read_text():
        assert proc.poll() is None and time.time() < deadline, "the fork server did not start"
        time.sleep(0.05)
    yield sock
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("through", ["own process", "fork server"])
def test_a_signal_after_the_result_lets_the_finished_job_exit_0(tmp_path, request, through):
    """The job has printed its result and is exiting (atexit handlers run, the fork server's child
    reports its status): a signal now used to kill it (-15), so Snakemake deleted its output, whose
    checkpoints were already gone."""
    server = request.getfixturevalue("server") if through == "fork server" else None
    status, stdout, stderr = job(tmp_path, "result", signal.SIGTERM, server)
    assert status == 0, stderr[-3000:]
    assert json.loads(stdout)["steps"] == 12 and (tmp_path / "final" / "model.safetensors").exists()
