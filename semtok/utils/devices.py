"""The device and the CPUs of a job (`compute.device`, `compute.threads`, `compute.num_workers`).

- Device: "cuda" asks for a GPU and stops the job at its start, naming the host and what it saw, when
  CUDA is not usable there (a GPU job on a node without a visible GPU must not train on the CPU for
  days); "cpu" is the CPU on purpose; "auto" is CUDA when usable, else the CPU (the tiny default).
  A process of a multi-GPU job takes the GPU of its local rank.
- CPUs: under Slurm a job's torch threads are the CPUs its allocation gives it, shared by the
  processes of its node, whatever OMP_NUM_THREADS Snakemake exported for the rule's `threads`; the allocation's CPUs per node come from the launcher
  (`SEMTOK_CPUS_PER_NODE`, from `scontrol`), else from the process's CPU affinity. Outside Slurm,
  OMP_NUM_THREADS (Snakemake's thread budget of a local rule) or the library default applies.
  `compute.threads` > 0 overrides both.
"""

from __future__ import annotations

import os
import socket
from importlib.metadata import version
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions: the launcher reads CPUS_PER_NODE without it
    import torch

    from semtok.config import ComputeConfig

CPUS_PER_NODE = "SEMTOK_CPUS_PER_NODE"  # set by semtok.cli.launch from the Slurm allocation


class DeviceUnavailable(SystemExit):
    """The config asks for CUDA where CUDA is not usable; the message says what the job saw."""


def local_processes() -> int:
    """Processes of this job on this node (torch.distributed's LOCAL_WORLD_SIZE; 1 when alone)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return max(1, int(value)) if value.isdigit() else 1


def cuda_report() -> str:
    """What this process sees of CUDA: host, device count, CUDA_VISIBLE_DEVICES, torch's CUDA build."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (
        f"host {socket.gethostname()}, torch.cuda.device_count()={count}, "
        f"CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)}, "
        f"torch {version('torch')} built with CUDA {torch.version.cuda or 'none (a CPU build)'}"
    )


def job_device(compute: ComputeConfig) -> torch.device:
    """The device of this process under `compute.device`; DeviceUnavailable when "cuda" is not usable."""
    import torch

    if compute.device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if compute.device == "cuda":
        raise DeviceUnavailable(
            f"compute.device is 'cuda' but CUDA is not usable here: {cuda_report()}. Check that the job "
            "asked Slurm for GPUs (the rule's gres) and landed on a GPU node with its driver; to run on the "
            "CPU on purpose set compute.device: cpu."
        )
    return torch.device("cpu")


def cpus_per_process() -> int:
    """CPUs for each process of this job on this node (see the module docstring)."""
    if "SLURM_JOB_ID" in os.environ:
        node = os.environ.get(CPUS_PER_NODE, "")
        cpus = int(node) if node.isdigit() and int(node) > 0 else len(os.sched_getaffinity(0))
        return max(1, cpus // local_processes())
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        return int(threads)
    import torch

    return max(1, torch.get_num_threads())


def job_threads(compute: ComputeConfig) -> int:
    """torch's CPU threads for this process: `compute.threads` when set, else `cpus_per_process()`."""
    return compute.threads if compute.threads > 0 else cpus_per_process()
