"""Training across two Slurm nodes (two slurmd on this machine, one CPU each, gloo), through
`snakemake --profile slurm` as a user types it, with the site profile that `semtok install-profile`
wrote into a temporary HOME; and preemption of such a job by `scancel`.

The rules and data are the default run's (the session fixture): Stage I and the generator start from
its shards, teachers and tokens, with fewer steps. Every checkpoint of these runs is written on a
signal (ckpt_every is beyond the last step), so a resume proves that the signal was handled."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from semtok import paths

pytestmark = pytest.mark.slurm

STEPS = 50
SETTINGS = [
    f"tokenizer.stage1.optim.steps={STEPS}",
    "tokenizer.stage1.optim.ckpt_every=1000",
    "tokenizer.stage1.optim.log_every=5",
    "generator.optim.steps=20",
    "generator.optim.ckpt_every=1000",
    "generator.optim.log_every=5",
]
# One process per node on CPU. The executor plugin asks non-GPU jobs for `--ntasks=1`, which Slurm
# fits on one node, so CPU rules spanning nodes also need tasks = nodes (GPU jobs do not).
TWO_NODES = ["stage1:nodes=2", "stage1:tasks=2", "train_ar:nodes=2", "train_ar:tasks=2"]
CPU_ONLY = {"SEMTOK_GPUS": "0", "CUDA_VISIBLE_DEVICES": ""}
STAGE1_JOB = "tokenizer-b18-stage1"


def stage1_dir(out: Path) -> Path:
    return paths.tokenizer_dir(out, "b18", "stage1")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next(folder.glob("*.safetensors"))))


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=0, atol=0, msg=name)


def inputs(default_run, dest: Path, *parts: str) -> Path:
    """An out_dir holding `parts` of the default run's outputs (hard links, times kept)."""
    for part in parts:
        shutil.copytree(default_run.outputs / part, dest / part, copy_function=os.link)
    return dest


@pytest.fixture(scope="module")
def profile_home(tmp_path_factory, job_env) -> dict[str, str]:
    """The environment of a user whose HOME is a new folder with the site profile installed by
    `semtok install-profile` at its default place."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in job_env.items() if k != "XDG_CONFIG_HOME"} | {"HOME": str(home)} | CPU_ONLY
    subprocess.run(
        [sys.executable, "-m", "semtok.cli", "install-profile", "--no-account", "--partition", "local"],
        env=env,
        check=True,
        capture_output=True,
    )
    assert (home / ".config" / "snakemake" / "slurm" / "config.yaml").is_file()
    return env


def snakemake_on_slurm(default_run, out: Path, target: Path) -> list[str]:
    """`snakemake --profile slurm TARGET` in the default run's workflow folder. Only the target runs:
    its inputs are the default run's files (hence mtime triggers: settings differ)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        str(target),
        "--profile",
        "slurm",
        "--rerun-triggers",
        "mtime",
        "--set-resources",
        *TWO_NODES,
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--config",
        f"out_dir={out}",
        f"overrides={json.dumps(SETTINGS)}",
    ]


def run_on_slurm(default_run, env: dict, out: Path, target: Path) -> str:
    done = subprocess.run(
        snakemake_on_slurm(default_run, out, target),
        cwd=default_run.wf,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return done.stderr


def run_locally(out: Path, resolved: Path, command: list[str]) -> None:
    """The same command and settings as a cluster run (its resolved config, out_dir moved to `out`),
    as two processes on this machine, outside Slurm."""
    config = json.loads(resolved.read_text()) | {"out_dir": str(out)}
    (out / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | CPU_ONLY
    env["SEMTOK_CPU_PROCS"] = "2"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "semtok.cli.launch",
            command[0],
            "--config",
            str(out / "config.json"),
            *command[1:],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-20000:]  # a crashed rank's stack precedes the others' errors


def ranks(log: Path) -> dict[int, tuple[int, str]]:
    """rank -> (node index, node name) of every process the launchers started, from a rule's log."""
    found = re.findall(
        r"semtok\.cli\.launch: rank (\d+) of (\d+) \(node (\d+) = (\S+), local rank 0\)", log.read_text()
    )
    assert found and all(int(world) == len(found) for _, world, _, _ in found), log.read_text()[-3000:]
    return {int(rank): (int(node), name) for rank, _, node, name in found}


@pytest.fixture(scope="module")
def two_node_stage1(slurm2, default_run, profile_home, tmp_path_factory) -> Path:
    """Stage I through `snakemake --profile slurm` on both nodes, undisturbed: its out_dir."""
    out = inputs(default_run, tmp_path_factory.mktemp("stage1-2nodes"), "data", "teachers")
    stderr = run_on_slurm(default_run, profile_home, out, stage1_dir(out))
    assert "nodes=2" in stderr and "rule stage1" in stderr
    return out


def test_stage1_on_two_nodes_equals_two_processes_on_one(
    slurm2, two_node_stage1, default_run, tmp_path
) -> None:
    """One process on each node, rank 0 on the first; the same weights, bit for bit, as two
    processes on one machine: with two processes every gradient all-reduce adds two numbers, which
    does not depend on the order."""
    out = two_node_stage1
    assert ranks(out / "logs" / "stage1_b18.log") == {0: (0, slurm2[0]), 1: (1, slurm2[1])}
    local = inputs(default_run, tmp_path, "data", "teachers")
    run_locally(
        local,
        paths.latest_config(out),
        ["stage1", "--variant", "b18", "--output", str(stage1_dir(local))],
    )
    assert_identical(stage1_dir(out), stage1_dir(local))


def test_generator_on_two_nodes_equals_two_processes_on_one(
    slurm2, default_run, profile_home, tmp_path
) -> None:
    parts = ("data", "teachers", "tokenizer/b18", "tokens/b18")
    out = inputs(default_run, tmp_path / "cluster", *parts)
    target = paths.generator_dir(out, "ar-l")
    run_on_slurm(default_run, profile_home, out, target)
    assert ranks(out / "logs" / "train_ar_ar-l.log") == {0: (0, slurm2[0]), 1: (1, slurm2[1])}
    local = inputs(default_run, tmp_path / "local", *parts)
    tokens = [str(paths.token_shard(local, "b18", i)) for i in range(2)]
    command = ["train-ar", "--variant", "ar-l", "--tokens", *tokens, "--output", str(local / "ar-l")]
    run_locally(local, paths.latest_config(out), command)
    assert_identical(target, local / "ar-l")


def logged_steps(metrics: Path) -> list[int]:
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return [json.loads(line)["step"] for line in lines]


def signalled_checkpoint(log: str) -> tuple[int, int]:
    """The step of the one checkpoint the job resumed from and its batch within its data segment (the
    checkpoint itself is gone: a finished job removes its checkpoints)."""
    resumed = re.findall(r"resumed from \S+ \(step (\d+)\)", log)
    assert len(resumed) == 1, f"expected one resume:\n{log[-3000:]}"
    offsets = re.findall(r"its data segment continues at batch (\d+)", log)
    assert len(offsets) == 1, f"expected one segment offset:\n{log[-3000:]}"
    return int(resumed[0]), int(offsets[0])


@pytest.mark.parametrize(
    "scancel",
    [
        ["--signal=USR1", "--batch"],  # the batch shell only: it dies, Slurm then ends the job's steps
        [],  # plain scancel: SIGTERM to every step, then SIGKILL after KillWait
        ["--signal=USR1"],  # every step but the batch shell: what --signal=USR1@600 sends at the time limit
    ],
    ids=["usr1-batch", "scancel", "usr1-steps"],
)
def test_preempted_two_node_job_resumes_to_the_same_weights(
    slurm2, two_node_stage1, default_run, profile_home, tmp_path, scancel
) -> None:
    out = inputs(default_run, tmp_path, "data", "teachers")
    metrics = paths.log_dir(out, STAGE1_JOB) / "metrics.jsonl"
    with open(tmp_path / "snakemake.log", "w") as log:
        proc = subprocess.Popen(
            snakemake_on_slurm(default_run, out, stage1_dir(out)),
            cwd=default_run.wf,
            env=profile_home,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 900
        while max(logged_steps(metrics), default=0) < 10:
            assert proc.poll() is None and time.monotonic() < deadline, "the job never got to step 10"
            time.sleep(0.2)
        job = re.findall(r"submitted with SLURM jobid (\d+)", (tmp_path / "snakemake.log").read_text())[0]
        subprocess.run(["scancel", *scancel, job], check=True)
        assert proc.wait(timeout=1800) == 0, (tmp_path / "snakemake.log").read_text()[-6000:]
    finally:
        if proc.poll() is None:  # a failed test: Snakemake cancels its jobs on SIGTERM
            proc.terminate()
            proc.wait(timeout=120)
    text = (tmp_path / "snakemake.log").read_text()
    assert f"SLURM-job '{job}' failed" in text, text[-3000:]
    assert len(set(re.findall(r"submitted with SLURM jobid (\d+)", text))) == 2, "not retried once"
    step, offset = signalled_checkpoint((out / "logs" / "stage1_b18.log").read_text())
    assert 10 <= step < STEPS
    assert offset == step  # written on the signal, mid-segment
    assert not paths.checkpoint_dir(out, STAGE1_JOB).exists()  # removed once the weights were exported
    assert_identical(stage1_dir(out), stage1_dir(two_node_stage1))
