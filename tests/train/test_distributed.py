"""Training with two CPU processes (gloo) started by semtok.cli.launch, for real: FSDP (`compute.fsdp`)
trains Stage I to the weights plain data parallelism (DDP) gives, writes sharded checkpoints, and
resumes to the weights of an uninterrupted run after a SIGKILL of everything, a signal that reaches
one process only (both must checkpoint the same step), and a signal to the launcher (forwarded)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from semtok import paths
from semtok.config import ComputeConfig, ConfigError, to_dict
from semtok.train.fsdp import FSDP, blocks

JOB = "tokenizer-b18-stage1"
STEPS, EVERY = 24, 8
SETTINGS = [
    f"tokenizer.stage1.optim.steps={STEPS}",
    f"tokenizer.stage1.optim.ckpt_every={EVERY}",
    "tokenizer.stage1.optim.log_every=1",
    "tokenizer.stage1.optim.batch_size=8",
]


def setup_run(tiny, built_cfg, out: Path, fsdp: bool) -> Path:
    """An out_dir reading the built shards, and its resolved config file."""
    out.mkdir(parents=True)
    (out / "data").symlink_to(built_cfg.out / "data")
    cfg = tiny.config(out, [*SETTINGS, f"compute.fsdp={str(fsdp).lower()}"])
    (out / "config.json").write_text(json.dumps(to_dict(cfg)))
    return out


@pytest.fixture
def start():
    """start(out): `semtok.cli.launch stage1` with two CPU processes, in a process group of its own;
    groups still running at the end of the test (a failed one) are killed."""
    groups: list[subprocess.Popen] = []

    def launch(out: Path) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(SEMTOK_CPU_PROCS="2", SEMTOK_GPUS="0")
        command = [sys.executable, "-m", "semtok.cli.launch", "stage1", "--config", str(out / "config.json")]
        with open(out / "launch.log", "a") as log:
            groups.append(
                subprocess.Popen(
                    [*command, "--variant", "b18", "--output", str(out / "final")],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return groups[-1]

    yield launch
    for proc in groups:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def logged_steps(out: Path) -> list[int]:
    metrics = paths.log_dir(out, JOB) / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return [json.loads(line)["step"] for line in lines]


def wait_for_steps(out: Path, proc: subprocess.Popen, step: int) -> None:
    wait_for(lambda: max(logged_steps(out), default=0) >= step, proc, f"step {step}")


def worker_pid(out: Path, rank: int, launch: int) -> int:
    """The pid of `rank` in the `launch`-th start (1-based) of the launcher, from its log."""
    pids = re.findall(rf"rank {rank} of 2 \(.*?\), pid (\d+)", (out / "launch.log").read_text())
    return int(pids[launch - 1])


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "diffusion_pytorch_model.safetensors"))


def finish(start, out: Path) -> None:
    assert start(out).wait(timeout=900) == 0, (out / "launch.log").read_text()[-3000:]


@pytest.mark.slow  # six two-process training runs (a minute or two)
def test_fsdp_trains_like_ddp_and_resumes_exactly_after_kill_and_signal(tiny, built_cfg, start, tmp_path):
    ddp = setup_run(tiny, built_cfg, tmp_path / "ddp", fsdp=False)
    fsdp = setup_run(tiny, built_cfg, tmp_path / "fsdp", fsdp=True)
    broken = setup_run(tiny, built_cfg, tmp_path / "interrupted", fsdp=True)
    finish(start, ddp)
    finish(start, fsdp)

    # 1. SIGKILL (the whole process group) once the first periodic checkpoint exists
    ckpts = paths.checkpoint_dir(broken, JOB)
    proc = start(broken)
    wait_for(lambda: (ckpts / f"step-{EVERY:08d}" / "meta.json").exists(), proc, "first checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shards = sorted(p.name for p in (ckpts / f"step-{EVERY:08d}").glob("fsdp-rank*.safetensors"))
    assert shards == ["fsdp-rank00000-of-00002.safetensors", "fsdp-rank00001-of-00002.safetensors"]
    # each process holds its half (dim 0) of nearly every tensor; what is left is small and replicated
    parts = [load_file(str(ckpts / f"step-{EVERY:08d}" / name)) for name in shards]
    whole, sharded = weights(fsdp), 0
    for name, value in whole.items():
        # objective "model", its module state, the Stage I objective's tokenizer
        first, second = (part[f"model.model.tokenizer.{name}"] for part in parts)
        if first.shape != value.shape:
            assert first.shape[0] + second.shape[0] == value.shape[0], name
            sharded += value.numel()
    assert sharded > 0.95 * sum(v.numel() for v in whole.values())

    # 2. SIGTERM to the process of rank 1 only: both processes checkpoint after the same step, exit 75
    # 3. SIGUSR1 to the launcher only: it forwards it to both; the same
    checkpointed = []
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        proc = start(broken)
        wait_for_steps(broken, proc, max(logged_steps(broken)) + 3)
        if signum == signal.SIGTERM:
            os.kill(worker_pid(broken, rank=1, launch=len(checkpointed) + 2), signum)
        else:
            proc.send_signal(signum)
        assert proc.wait(timeout=300) == 75, (broken / "launch.log").read_text()[-3000:]
        checkpointed.append(max(ckpts.glob("step-*"), key=lambda p: p.name))
        assert json.loads((checkpointed[-1] / "meta.json").read_text())["step"] < STEPS

    # 4. the rest
    finish(start, broken)
    log = (broken / "launch.log").read_text()
    for ckpt in [ckpts / f"step-{EVERY:08d}", *checkpointed]:
        assert f"resumed from {ckpt}" in log

    expected, resumed, data_parallel = weights(fsdp), weights(broken), weights(ddp)
    assert resumed.keys() == expected.keys() == data_parallel.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)
        # sharded and replicated training differ only in the order of gradient reductions
        torch.testing.assert_close(expected[name], data_parallel[name], rtol=0, atol=1e-5, msg=name)


def test_sharding_units_are_the_outermost_trainable_blocks():
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(4, 4)
            self.to_out = torch.nn.ModuleList([torch.nn.Linear(4, 4), torch.nn.Dropout(0.0)])

    model = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([Block(), Block()])
    model.frozen = torch.nn.ModuleList([torch.nn.Linear(4, 4)]).requires_grad_(False)
    model.head = torch.nn.Linear(4, 2)
    assert blocks(model) == list(model.blocks)


def test_fsdp_refuses_fp16_and_a_checkpoint_of_another_process_count(tmp_path):
    with pytest.raises(ConfigError, match="compute.fsdp: fp16"):
        FSDP(ComputeConfig(mixed_precision="fp16", fsdp=True), rank=0, world=2)
    (tmp_path / "fsdp-rank00000-of-00004.safetensors").touch()
    sharding = FSDP(ComputeConfig(mixed_precision="no", fsdp=True), rank=0, world=2)
    with pytest.raises(RuntimeError, match="number of processes that wrote it"):
        sharding.load(tmp_path, {}, {}, {})
