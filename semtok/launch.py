"""`python -m semtok.launch COMMAND [ARGS...]`: start a semtok entry point through `accelerate launch`
with as many processes as the job has GPUs, on as many machines as the Slurm allocation has nodes.

- GPUs per node: SEMTOK_GPUS, else SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`;
  none (the tiny default on a laptop) → the entry point runs directly as one CPU process; the
  launcher's child process would add nothing but seconds of imports.
- Multi-node (SLURM_JOB_NUM_NODES > 1): the launcher re-executes itself once per node with
  `srun --ntasks-per-node=1`; each copy starts `accelerate launch` with its machine rank
  (SLURM_NODEID) and the rendezvous on the allocation's first host.
- Mixed precision (`compute.mixed_precision`) and FSDP (`compute.fsdp`: full shard, transformer-block
  wrapping, sharded checkpoints — for the 2.2B decoder on GPUs with less memory than an H200; plain
  DDP fits the decoder with its optimizer state on 141 GB) come from the config.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys


def gpus_per_node() -> int:
    for var in ("SEMTOK_GPUS", "SLURM_GPUS_ON_NODE"):
        if os.environ.get(var, "").strip().isdigit():
            return int(os.environ[var])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return 0


def _first_host() -> str:
    nodelist = os.environ.get("SLURM_JOB_NODELIST", "")
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[0]


def compute_settings(argv: list[str]) -> dict:
    """The `compute` section of the command's --config (JSON or YAML), without importing semtok."""
    if "--config" not in argv:
        return {}
    with open(argv[argv.index("--config") + 1]) as f:
        text = f.read()
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError:
        import yaml

        cfg = yaml.safe_load(text)
    return cfg.get("compute", {})


def accelerate_command(
    argv: list[str], gpus: int, nodes: int, rank: int, host: str | None, fsdp: bool
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        str(nodes),
        "--dynamo_backend",
        "no",
    ]
    if gpus == 0:
        cmd += ["--cpu", "--num_processes", "1", "--mixed_precision", "no"]
    else:
        precision = compute_settings(argv).get("mixed_precision", "no")
        cmd += ["--num_processes", str(gpus * nodes), "--mixed_precision", precision]
        if gpus * nodes > 1:
            cmd.append("--multi_gpu")
    if nodes > 1:
        port = os.environ.get("SEMTOK_MASTER_PORT", "29500")
        cmd += ["--machine_rank", str(rank), "--main_process_ip", host or "", "--main_process_port", port]
    if fsdp and gpus * nodes > 1:
        cmd += [
            "--use_fsdp",
            "--fsdp_sharding_strategy",
            "FULL_SHARD",
            "--fsdp_auto_wrap_policy",
            "TRANSFORMER_BASED_WRAP",
            "--fsdp_state_dict_type",
            "SHARDED_STATE_DICT",
            "--fsdp_use_orig_params",
            "true",
        ]
    return cmd + ["-m", "semtok.cli", *argv]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1")))
    if nodes > 1 and os.environ.get("SEMTOK_LAUNCH_CHILD") != "1":
        srun = ["srun", "--overlap", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
        env = {**os.environ, "SEMTOK_LAUNCH_CHILD": "1"}
        return subprocess.call([*srun, sys.executable, "-m", "semtok.launch", *argv], env=env)
    rank = int(os.environ.get("SLURM_NODEID", "0"))
    gpus = gpus_per_node()
    if gpus == 0 and nodes == 1:
        # One CPU process: accelerate's launcher would only start the same command in a child
        # process (seconds of imports); the entry point builds the same Accelerator either way.
        cmd = [sys.executable, "-m", "semtok.cli", *argv]
    else:
        fsdp = bool(compute_settings(argv).get("fsdp", False))
        cmd = accelerate_command(argv, gpus, nodes, rank, _first_host() if nodes > 1 else None, fsdp)
    print("semtok.launch:", shlex.join(cmd), flush=True)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
