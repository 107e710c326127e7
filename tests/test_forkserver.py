"""The fork server (semtok/cli/forkserver.py): a command run through it writes to the rule's log what it
writes in-process, SystemExit messages included, and exits with the same status; its jobs never
outlive the run (killed parent, server or client)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import semtok
from semtok.utils.process import EXIT_CHECKPOINTED

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# What the commands below import (the real server preloads torch & co. as well).
PRELOAD = ["semtok.cli.dispatch", "semtok.config", "semtok.registry", "semtok.data.imagenet"]
# A stand-in for Snakemake: starts the server given as its arguments, then waits.
STAND_IN = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(600)"


def environment(server: Path | None = None) -> dict[str, str]:
    path = os.pathsep.join([str(Path(semtok.__file__).parents[1]), str(TESTS)])
    return {**os.environ, "PYTHONPATH": path, "SEMTOK_FORKSERVER": str(server or "")}


def server_command(sock: Path, *preload: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "semtok.cli.forkserver",
        "--socket",
        str(sock),
        "--preload",
        *PRELOAD,
        *preload,
    ]


def wait_ready(sock: Path) -> int:
    """The server's pid, once it listens on `sock`."""
    ready = sock.with_name(sock.name + ".ready")
    deadline = time.time() + 180
    while not ready.exists() or not ready.read_text():
        assert time.time() < deadline, "the fork server did not start"
        time.sleep(0.05)
    return int(ready.read_text())


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie has ended: only its parent has not collected its status yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def kill(*pids: int) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    sock = tmp_path_factory.mktemp("forkserver") / "s.sock"
    proc = subprocess.Popen(server_command(sock), env=environment(), cwd=ROOT)
    wait_ready(sock)
    yield sock
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageNet-layout folder: one train class, a flat val folder with one labelled image and one
    without a label."""
    root = tmp_path_factory.mktemp("imagenet")
    (root / "train/n01").mkdir(parents=True)
    (root / "val").mkdir()
    Image.new("RGB", (8, 8)).save(root / "train/n01/a.JPEG")
    Image.new("RGB", (8, 8)).save(root / "val/v0.JPEG")
    Image.new("RGB", (8, 8)).save(root / "val/v1.JPEG")
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nv0,n01 1 2 3 4\n")
    return root


# case -> (arguments after `semtok`, a part of the expected log); {root} is the ImageNet folder. The
# settings file is passed explicitly, as a command run by hand must (without one it stops).
INDEX = ["index", "--config", "config/config.yaml"]
CASES = {
    "missing imagenet_root": (
        [*INDEX, "--split", "train", "--set", "data.source=imagenet"],
        "imagenet_root",
    ),
    "missing val CSV": (
        [*INDEX, "--split", "val", "--set", "data.val_solution_csv={root}/none.csv"],
        "none.csv does not exist",
    ),
    "unlabelled val image": ([*INDEX, "--split", "val"], "1 val images have no label"),
    "unknown dotted key": ([*INDEX, "--split", "val", "--set", "data.sourc=imagenet"], "data.sourc"),
    "unknown command": (["no-such-command"], "invalid choice"),
    "no settings file": (["index", "--split", "train"], "Pass --config FILE"),
    "empty settings file": (["index", "--config", "", "--split", "train"], "SEMTOK_CONFIG"),
    "success": ([*INDEX, "--split", "train", "--set", "data.train_shards=1"], '"images": 1'),
}


def run_logged(argv: list[str], log: Path, server: Path | None) -> int:
    """Run `semtok argv` as a rule does (`> log 2>&1`), through `server` or in-process."""
    with open(log, "w") as f:
        done = subprocess.run(
            [sys.executable, "-m", "semtok.cli", *argv],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=environment(server),
            cwd=ROOT,
            timeout=300,
        )
    return done.returncode


@pytest.mark.parametrize("case", list(CASES))
def test_messages_reach_the_log_through_the_fork_server_as_in_process(server, imagenet, tmp_path, case):
    argv, expected = CASES[case]
    argv = [a.format(root=imagenet) for a in argv]
    if argv[0] == "index":
        argv += ["--output", str(tmp_path / "index.tsv"), "--set", "data.source=imagenet"]
        argv += ["--set", f"data.imagenet_root={imagenet}"] if case != "missing imagenet_root" else []
    direct = run_logged(argv, tmp_path / "direct.log", None)
    forked = run_logged(argv, tmp_path / "forked.log", server)
    logs = [(tmp_path / name).read_text() for name in ("direct.log", "forked.log")]
    assert expected in logs[0], logs[0]
    assert logs[1] == logs[0]
    assert forked == direct


def test_uncaught_exception_reaches_the_log_through_the_fork_server(server, imagenet, tmp_path):
    argv = [
        *INDEX,
        "--split",
        "train",
        "--set",
        "data.source=imagenet",
        "--set",
        f"data.imagenet_root={imagenet}",
    ]
    argv += ["--set", "data.train_shards=1", "--output", "/dev/null/index.tsv"]
    direct = run_logged(argv, tmp_path / "direct.log", None)
    forked = run_logged(argv, tmp_path / "forked.log", server)
    logs = [(tmp_path / name).read_text().splitlines() for name in ("direct.log", "forked.log")]
    # the traceback follows the job's own lines (its thread count), as it does without the server
    assert all("Traceback (most recent call last):" in log for log in logs)
    assert (
        logs[0][: logs[0].index("Traceback (most recent call last):")]
        == logs[1][: logs[1].index("Traceback (most recent call last):")]
    )
    assert logs[1][-1] == logs[0][-1] and "FileExistsError" in logs[0][-1]
    assert forked == direct == 1


@pytest.mark.parametrize("victim", ["parent", "server", "client"])
def test_jobs_die_with_the_run(tmp_path, victim):
    """SIGKILL Snakemake (the server's parent), the server, or the rule's process (the client): the
    job the server forked (the test-only `semtok sleep` of tests/forkserver_job.py) is gone within a few
    seconds instead of racing a rerun."""
    sock, pid_file = tmp_path / "s.sock", tmp_path / "job.pid"
    stand_in = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, *server_command(sock, "forkserver_job")], env=environment(), cwd=ROOT
    )
    server_pid = wait_ready(sock)
    client = subprocess.Popen(
        [sys.executable, "-m", "semtok.cli", "sleep", "--pid-file", str(pid_file)],
        env=environment(sock),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert client.poll() is None and time.time() < deadline, client.stderr.read()
            time.sleep(0.05)
        job = int(pid_file.read_text())
        assert job != client.pid and alive(job)  # the job runs in the fork server
        os.kill({"parent": stand_in.pid, "server": server_pid, "client": client.pid}[victim], signal.SIGKILL)
        deadline = time.time() + 5
        while alive(job) and time.time() < deadline:
            time.sleep(0.05)
        assert not alive(job), f"the job outlived its {victim}"
        if victim != "client":  # the job ended as a terminated job does (semtok.utils.process) and said so
            assert client.wait(timeout=10) == EXIT_CHECKPOINTED, client.stderr.read()
    finally:
        kill(client.pid, stand_in.pid, server_pid)
        client.wait()
        stand_in.wait()


@pytest.fixture(scope="module")
def torch_server(tmp_path_factory: pytest.TempPathFactory):
    """A server that has imported torch (as the real one does) and knows the test-only commands."""
    sock = tmp_path_factory.mktemp("forkserver-torch") / "s.sock"
    proc = subprocess.Popen(server_command(sock, "torch", "forkserver_job"), env=environment(), cwd=ROOT)
    wait_ready(sock)
    yield sock
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("omp", "setting", "expected"),
    [
        ("1", [], 1),
        ("", [], None),
        ("", ["--set", "compute.threads=1"], 1),
        ("2", ["--set", "compute.threads=1"], 1),
    ],
    ids=["OMP_NUM_THREADS=1", "library default", "compute.threads=1", "compute.threads wins"],
)
def test_a_forked_job_runs_with_its_own_thread_count(torch_server, tmp_path, omp, setting, expected):
    """torch read its thread count when the server imported it; the job's OMP_NUM_THREADS (which the
    launcher sets) or compute.threads still decide, as they would in a process of its own."""
    out = tmp_path / "threads.txt"
    env = {k: v for k, v in environment(torch_server).items() if k != "OMP_NUM_THREADS"}
    env |= {"OMP_NUM_THREADS": omp} if omp else {}
    argv = ["threads", "--config", "config/config.yaml", "--output", str(out), "--set", "compute.threads=0"]
    argv += setting
    done = subprocess.run(
        [sys.executable, "-m", "semtok.cli", *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    alone = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env={k: v for k, v in env.items() if k != "SEMTOK_FORKSERVER"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.read_text()) == (expected or int(alone.stdout))
