"""semtok.launch: processes, machines, rank and rendezvous from the job's GPUs and Slurm nodes."""

from __future__ import annotations

import json

from semtok import launch


def config(tmp_path, **compute) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"compute": compute}))
    return str(path)


def test_multi_node_command_has_rank_rendezvous_precision_and_fsdp(tmp_path):
    argv = ["stage1", "--config", config(tmp_path, mixed_precision="bf16", fsdp=True), "--variant", "b18"]
    cmd = launch.accelerate_command(argv, gpus=8, nodes=4, rank=2, host="node-a", fsdp=True)
    joined = " ".join(cmd)
    assert "--num_processes 32" in joined and "--num_machines 4" in joined and "--multi_gpu" in joined
    assert "--machine_rank 2" in joined and "--main_process_ip node-a" in joined
    assert "--mixed_precision bf16" in joined and "--use_fsdp" in joined
    assert cmd[-6:] == ["-m", "semtok.cli", *argv][-6:]


def test_single_gpu_has_no_multi_gpu_or_fsdp(tmp_path):
    argv = ["encode", "--config", config(tmp_path, mixed_precision="bf16", fsdp=True)]
    joined = " ".join(launch.accelerate_command(argv, gpus=1, nodes=1, rank=0, host=None, fsdp=True))
    assert "--num_processes 1" in joined and "--multi_gpu" not in joined and "--use_fsdp" not in joined


def test_gpu_count_from_slurm_or_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("SEMTOK_GPUS", raising=False)
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    assert launch.gpus_per_node() == 4
    monkeypatch.delenv("SLURM_GPUS_ON_NODE")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert launch.gpus_per_node() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.gpus_per_node() == 0


def test_cpu_runs_the_entry_point_directly(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMTOK_GPUS", "0")
    monkeypatch.delenv("SLURM_JOB_NUM_NODES", raising=False)
    executed = {}
    monkeypatch.setattr(launch.os, "execvp", lambda prog, cmd: executed.setdefault("cmd", cmd))
    launch.main(["config-schema", "--config", config(tmp_path)])
    assert executed["cmd"][1:4] == ["-m", "semtok.cli", "config-schema"]
