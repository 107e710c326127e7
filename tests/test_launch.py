"""semtok.cli.launch: processes per node, the Slurm job's nodes, the per-node srun, exit statuses.

The launcher's processes really rendezvousing (one node, and two Slurm nodes) are tested in
tests/train/test_fsdp.py and tests/cluster/test_multinode.py."""

from __future__ import annotations

import shlex
import signal
import sys
import time

import pytest

from semtok.cli import launch


def test_gpu_count_from_slurm_or_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("SEMTOK_GPUS", raising=False)
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    assert launch.gpus_per_node() == 4
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert launch.gpus_per_node() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.gpus_per_node() == 0


def test_processes_per_node_one_per_gpu_else_semtok_cpu_procs(monkeypatch):
    monkeypatch.setenv("SEMTOK_GPUS", "8")
    monkeypatch.setenv("SEMTOK_CPU_PROCS", "2")
    assert launch.processes_per_node() == 8
    monkeypatch.setenv("SEMTOK_GPUS", "0")
    assert launch.processes_per_node() == 2
    monkeypatch.delenv("SEMTOK_CPU_PROCS")
    assert launch.processes_per_node() == 1
    monkeypatch.setenv("SEMTOK_CPU_PROCS", "two")
    with pytest.raises(SystemExit, match="SEMTOK_CPU_PROCS"):
        launch.processes_per_node()


def test_allocation_is_asked_of_the_controller_not_the_step_environment(monkeypatch):
    """Inside Snakemake's `srun -n1` step the environment names one node of a two-node job."""
    answers = {
        (
            "show",
            "job",
            "-o",
            "42",
        ): "JobId=42 JobName=x NodeList=gpu-[07-08] NumNodes=2 NumCPUs=32 CPUs/Task=16",
        ("show", "hostnames", "gpu-[07-08]"): "gpu-07\ngpu-08\n",
        ("show", "node", "-o", "gpu-07"): "NodeName=gpu-07 Arch=x86_64 NodeAddr=10.0.0.7 NodeHostName=gpu-07",
    }
    monkeypatch.setattr(launch, "_scontrol", lambda *args: answers[args])
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-07")
    monkeypatch.setenv("SLURM_NNODES", "1")
    job = launch.allocation()
    assert job == launch.Allocation(["gpu-07", "gpu-08"], cpus_per_node=16)
    assert launch.node_address(job.hosts[0]) == "10.0.0.7"
    monkeypatch.delenv("SLURM_JOB_ID")
    assert launch.allocation() is None


def test_srun_starts_one_launcher_per_node_outside_the_current_step(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu-07")
    monkeypatch.setenv("SRUN_CPUS_PER_TASK", "1")
    cmd = launch.srun_command(["stage1", "--variant", "b18"], launch.Allocation(["a", "b", "c"], 16))
    assert cmd[: cmd.index(sys.executable)] == [
        "srun",
        "--overlap",
        "--nodes=3",
        "--ntasks=3",
        "--ntasks-per-node=1",
        "--cpus-per-task=16",
        "--kill-on-bad-exit=1",
    ]
    assert cmd[-5:] == ["-m", "semtok.cli.launch", "stage1", "--variant", "b18"]
    env = launch.srun_env(3, "10.0.0.7:29542")
    assert (
        env["SLURM_JOB_ID"] == "42"
        and env[launch.RENDEZVOUS] == "10.0.0.7:29542"
        and env[launch.NODES] == "3"
    )
    assert not {"SLURM_NTASKS", "SLURM_JOB_NODELIST", "SRUN_CPUS_PER_TASK"} & env.keys()


@pytest.mark.parametrize(
    ("codes", "status"),
    [
        ([0, 0], 0),
        ([75, 75], 75),
        ([75, 0], 75),
        ([75, None], 75),
        ([1, None], 1),
        ([75, 3], 3),
        ([-signal.SIGKILL, 0], 128 + signal.SIGKILL),
    ],
)
def test_exit_status_of_a_node(codes, status):
    assert launch.exit_status(codes) == status


def test_failing_processes_give_their_status(monkeypatch, capsys):
    """Two real processes (an unknown command exits 2 in both); each is told its rank."""
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    assert launch.run_processes(["no-such-command"], 2, nodes=1, node_rank=0, host="127.0.0.1", port=1) == 2
    out = capsys.readouterr().out
    assert "rank 0 of 2 (node 0" in out and "rank 1 of 2 (node 0" in out


def test_a_crashed_rank_is_named_with_its_stack_and_the_others_stopped(monkeypatch, tmp_path, capfd):
    """Rank 1 dies of SIGSEGV while rank 0 would run for a minute: the launcher returns 128 + 11 at once,
    says which rank died of what, rank 0 is stopped, and the crash printed rank 1's Python stack."""
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    monkeypatch.delenv("PYTHONFAULTHANDLER", raising=False)
    program = (
        "import ctypes, os, time\n"
        "def crash():\n    ctypes.string_at(0)\n"
        "crash() if os.environ['RANK'] == '1' else time.sleep(60)\n"
    )
    python = tmp_path / "python"  # stands in for sys.executable: `python -m semtok.cli ...` runs `program`
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -c {shlex.quote(program)}\n")
    python.chmod(0o755)
    monkeypatch.setattr(launch.sys, "executable", str(python))
    started = time.monotonic()
    status = launch.run_processes(["stage1"], 2, nodes=1, node_rank=0, host="127.0.0.1", port=1)
    assert status == 128 + signal.SIGSEGV
    assert time.monotonic() - started < 30  # rank 0 was killed, not waited for
    err = capfd.readouterr().err
    assert "rank 1 on " in err and "killed by signal 11 (SIGSEGV)" in err
    assert "rank 0 on " not in err
    assert "Segmentation fault" in err and "in crash" in err  # faulthandler's stack of rank 1


def test_one_process_replaces_the_launcher(monkeypatch):
    monkeypatch.setenv("SEMTOK_GPUS", "0")
    monkeypatch.delenv("SEMTOK_CPU_PROCS", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(launch.RENDEZVOUS, raising=False)
    executed = {}
    monkeypatch.setattr(launch.os, "execvpe", lambda prog, cmd, env: executed.setdefault("cmd", cmd))
    launch.main(["config-schema"])
    assert executed["cmd"][1:] == ["-m", "semtok.cli", "config-schema"]
