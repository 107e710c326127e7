"""`python -m semtok.cli.launch COMMAND [ARGS...]`: start a semtok entry point with one process per GPU
(or `SEMTOK_CPU_PROCS` processes on a node without GPUs) on every node of the Slurm allocation.

- Processes per node: SEMTOK_GPUS, else SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES, else
  `nvidia-smi -L`; a node without GPUs runs SEMTOK_CPU_PROCS processes (default 1, gloo).
- One process in all (the tiny default on a laptop, a 1-GPU job): the entry point replaces the
  launcher (exec), so signals and the exit status are the entry point's own.
- Several: the launcher starts them itself with torch.distributed's environment (RANK, LOCAL_RANK,
  WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), which accelerate's `Accelerator` reads;
  it forwards SIGTERM/SIGUSR1/SIGINT to them and exits with 75 when they checkpointed on a signal
  (75 from all), 0 when all finished, else the first failure (the others are then killed, since
  they would wait for the failed one forever). It names each failed rank on stderr with how it ended
  (`killed by signal 11 (SIGSEGV)`), and the processes run with PYTHONFAULTHANDLER=1, so a rank
  that crashes prints the Python stack of each of its threads.
- Multi-node (the job's node list, asked of `scontrol`, has N > 1 nodes): the launcher replaces
  itself with `srun --nodes=N --ntasks=N --ntasks-per-node=1 python -m semtok.cli.launch ...`; each copy
  starts the processes of its node with ranks from SLURM_NODEID, and the rendezvous is on the address
  Slurm knows for the job's first node (NodeAddr), port SEMTOK_MASTER_PORT (default 29500 + the job
  id modulo 10000, so two jobs sharing a node do not collide).
- FSDP (`compute.fsdp`) and mixed precision (`compute.mixed_precision`) are set up by the training
  loop from the config (semtok/train/fsdp.py), identically on CPU and GPU.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from semtok.utils import logs
from semtok.utils.devices import CPUS_PER_NODE
from semtok.utils.process import EXIT_CHECKPOINTED

FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
NODES, RENDEZVOUS = "SEMTOK_LAUNCH_NODES", "SEMTOK_LAUNCH_RENDEZVOUS"  # set for the per-node launchers


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


def processes_per_node() -> int:
    """One per GPU; on a node without GPUs SEMTOK_CPU_PROCS (default 1)."""
    gpus = gpus_per_node()
    if gpus:
        return gpus
    value = os.environ.get("SEMTOK_CPU_PROCS", "1").strip()
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(
            f"semtok.cli.launch: error: SEMTOK_CPU_PROCS must be a positive integer, not {value!r}"
        )
    return int(value)


@dataclass
class Allocation:
    hosts: list[str]  # node names, the first one is rank 0's
    cpus_per_node: int


def allocation() -> Allocation | None:
    """The Slurm job this runs in, from the controller (None outside Slurm). The job's environment is
    not trusted for this: Snakemake's jobstep runs the rule in `srun -n1` with the SLURM_* variables
    removed, so that step sees one node of a two-node job."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    info = dict(re.findall(r"(\S+?)=(\S*)", _scontrol("show", "job", "-o", job)))
    if info.get("NodeList", "(null)") == "(null)" or not info.get("NumCPUs", "").isdigit():
        raise SystemExit(f"semtok.cli.launch: error: `scontrol show job {job}` names no nodes or CPUs")
    hosts = _scontrol("show", "hostnames", info["NodeList"]).split()
    return Allocation(hosts, max(1, int(info["NumCPUs"]) // len(hosts)))


def node_address(node: str) -> str:
    """The address Slurm reaches `node` at (NodeAddr; the name itself when it has none)."""
    found = re.search(r"\bNodeAddr=(\S+)", _scontrol("show", "node", "-o", node))
    return found.group(1) if found else node


def _scontrol(*args: str) -> str:
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"semtok.cli.launch: error: scontrol {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(rank: int, local_rank: int, world: int, local_world: int, host: str, port: int) -> dict:
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(local_world),
        MASTER_ADDR=host,
        MASTER_PORT=str(port),
    )
    env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: one thread per process unless told
    env.setdefault("PYTHONFAULTHANDLER", "1")  # a crashed rank prints every thread's Python stack
    return env


def failed(code: int | None) -> bool:
    """A process that ended neither successfully nor checkpointed on a signal (None: still running)."""
    return code not in (None, 0, EXIT_CHECKPOINTED)


def exit_status(codes: list[int | None]) -> int:
    """The launcher's status from its processes' (None: still running): 0 when all finished, 75 when
    all finished or checkpointed and at least one checkpointed, else the first failure."""
    failures = [c for c in codes if failed(c)]
    if failures:
        return 128 - failures[0] if failures[0] < 0 else failures[0]  # killed by signal n: 128 + n
    return EXIT_CHECKPOINTED if EXIT_CHECKPOINTED in codes else 0


def describe(code: int) -> str:
    """An exit status of a process in words: `exit status 1`, `killed by signal 11 (SIGSEGV)`."""
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"killed by signal {-code}"
    return f"killed by signal {-code} ({name})"


def report_failures(codes: list[int | None], first_rank: int, where: str) -> None:
    """Say on stderr which ranks failed and how; the others are stopped next (they would wait forever)."""
    for local_rank, code in enumerate(codes):
        if failed(code):
            print(
                f"semtok.cli.launch: rank {first_rank + local_rank} on {where} failed: {describe(code)}; "
                "stopping the other processes of this node",
                file=sys.stderr,
                flush=True,
            )


def run_processes(argv: list[str], per_node: int, nodes: int, node_rank: int, host: str, port: int) -> int:
    """Start this node's `per_node` processes of `semtok argv` (ranks node_rank·per_node + i, rendezvous
    at host:port), wait for them and return their exit_status."""
    world = per_node * nodes
    where = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    procs = []
    for local_rank in range(per_node):
        rank = node_rank * per_node + local_rank
        env = worker_env(rank, local_rank, world, per_node, host, port)
        cmd = [sys.executable, "-m", "semtok.cli", *argv]
        procs.append(subprocess.Popen(cmd, env=env))
        print(
            f"semtok.cli.launch: rank {rank} of {world} (node {node_rank} = {where}, local rank {local_rank}), "
            f"pid {procs[-1].pid}, rendezvous {host}:{port}: {shlex.join(cmd)}",
            flush=True,
        )

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    while True:
        codes = [p.poll() for p in procs]
        status = exit_status(codes)
        if status not in (0, EXIT_CHECKPOINTED):
            report_failures(codes, node_rank * per_node, where)
            for p in procs:
                if p.poll() is None:
                    p.kill()
        if all(c is not None for c in codes) or status not in (0, EXIT_CHECKPOINTED):
            for p in procs:
                p.wait()
            return status
        time.sleep(0.2)


def srun_command(argv: list[str], job: Allocation) -> list[str]:
    """One launcher per node of the job, each with the node's CPUs (a step gets the job's GPUs)."""
    nodes = len(job.hosts)
    return [
        "srun",
        "--overlap",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={job.cpus_per_node}",
        "--kill-on-bad-exit=1",
        sys.executable,
        "-m",
        "semtok.cli.launch",
        *argv,
    ]


def srun_env(nodes: int, rendezvous: str) -> dict[str, str]:
    """The environment of srun_command: without the SLURM_* variables of the step this runs in (srun
    would take that step, one node and one task, for the allocation), so srun asks the controller."""
    keep = {"SLURM_JOB_ID", "SLURM_CONF"}
    env = {
        k: v for k, v in os.environ.items() if k in keep or not k.startswith(("SLURM_", "SRUN_", "SBATCH_"))
    }
    return {**env, NODES: str(nodes), RENDEZVOUS: rendezvous}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    rendezvous = os.environ.get(RENDEZVOUS)
    owner = logs.claim(argv)  # the job's log: this attempt's header (semtok/utils/logs.py)
    logs.stamp_streams()
    if rendezvous:  # one node's launcher, started by srun_command
        host, port = rendezvous.rsplit(":", 1)
        nodes, node_rank = int(os.environ[NODES]), int(os.environ["SLURM_NODEID"])
        return run_processes(argv, processes_per_node(), nodes, node_rank, host, int(port))
    job = allocation()
    if job is not None:
        os.environ[CPUS_PER_NODE] = str(job.cpus_per_node)  # the processes' threads (semtok/utils/devices.py)
    if job is not None and len(job.hosts) > 1:
        port = os.environ.get("SEMTOK_MASTER_PORT") or str(29500 + int(os.environ["SLURM_JOB_ID"]) % 10000)
        cmd, env = srun_command(argv, job), srun_env(len(job.hosts), f"{node_address(job.hosts[0])}:{port}")
    elif processes_per_node() > 1:
        port = int(os.environ.get("SEMTOK_MASTER_PORT") or free_port())
        status = run_processes(argv, processes_per_node(), 1, 0, "127.0.0.1", port)
        logs.release(owner, status)
        return status
    else:
        cmd, env = [sys.executable, "-m", "semtok.cli", *argv], dict(os.environ)
    print("semtok.cli.launch:", shlex.join(cmd), flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
