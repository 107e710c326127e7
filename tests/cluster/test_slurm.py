"""The workflow on a real Slurm: the site profile, Slurm itself, a Snakemake run killed mid-way and
resumed, and the DAG through the executor plugin giving the same outputs as that local run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from base64 import urlsafe_b64decode
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from snakemake_executor_plugin_slurm.partitions import read_partition_file

from semtok import cli

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

# Targets run both locally and through Slurm; extend towards the longest chain of the DAG.
TARGETS = ["data_summary"]
# Outputs that must be byte-identical whichever executor wrote them (globs relative to out_dir).
IDENTICAL = ["data/**/*", "tables/*"]
# The fault test kills Snakemake as soon as one of these exists.
KILL_WHEN = "data/shards/*/*.tar"


def install_profile(dest: Path, *flags: str) -> None:
    assert cli.main(["install-profile", "--dest", str(dest), *flags]) == 0


def workflow_copy(tmp_path: Path) -> Path:
    """The repository's workflow (Snakefile, rules, configs) in a folder of its own."""
    wf = tmp_path / "wf"
    wf.mkdir()
    shutil.copy(REPO / "Snakefile", wf)
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, wf / folder)
    return wf


def snakemake(out: Path, *args: str) -> list[str]:
    """The command line making TARGETS with `args`, writing into `out` (its out_dir)."""
    return [str(SNAKEMAKE), *TARGETS, *args, "--config", f"out_dir={out}"]


def run(wf: Path, env: dict[str, str], command: list[str]) -> None:
    done = subprocess.run(command, cwd=wf, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-6000:]}"


def files(root: Path, patterns: list[str] | None = None) -> dict[str, Path]:
    """Relative path -> path of every file under `root` (matching one of `patterns`)."""
    found = (p for pattern in patterns or ["**/*"] for p in root.glob(pattern))
    return {str(p.relative_to(root)): p for p in found if p.is_file()}


def recorded(wf: Path, kind: str) -> set[Path]:
    """Outputs in Snakemake's records of `wf`: kind "metadata" = written by a job that finished,
    "incomplete" = of a job that started and did not finish (record names are base64 paths)."""
    root = wf / ".snakemake" / kind
    records = (p.relative_to(root).parts for p in root.rglob("*") if p.is_file())
    return {
        Path(urlsafe_b64decode("".join(part.lstrip("@") for part in parts)).decode()) for parts in records
    }


def mtimes(paths: set[Path]) -> dict[Path, int]:
    """mtime of every file of `paths` (files, or folders and everything in them)."""
    found = [q for p in paths for q in ([p] if p.is_file() else p.rglob("*"))]
    return {p: p.stat().st_mtime_ns for p in found}


def test_install_profile_writes_a_valid_profile(tmp_path: Path) -> None:
    install_profile(tmp_path / "slurm", "--no-account", "--partition", "local")
    profile = yaml.safe_load((tmp_path / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert profile["slurm-array-jobs"].split(",") == ["shard_images", "encode_shard", "dump_tokens"]
    assert profile["default-resources"] == ["slurm_partition='local'"]
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    assert "software-deployment-method" not in profile

    with pytest.raises(SystemExit, match="--force"):
        install_profile(tmp_path / "slurm", "--account", "proj", "--partition", "cpu")
    install_profile(
        tmp_path / "slurm", "--account", "proj", "--partition", "cpu", "--gpu-partition", "gpu", "--force"
    )
    profile = yaml.safe_load((tmp_path / "slurm" / "config.yaml").read_text())
    assert profile["default-resources"] == ["slurm_account='proj'"]
    partitions = {
        p.name: p.limits.max_gpu for p in read_partition_file(Path(profile["slurm-partition-config"]))
    }
    assert partitions == {"cpu": 0, "gpu": 8}


@pytest.mark.slurm
def test_sbatch_job_completes(slurm: None, tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    job = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-o", str(out), "--wrap", "srun echo hello from $SLURM_JOB_ID"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    assert out.read_text().strip() == f"hello from {job_id}"
    state = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True
    )
    assert state.stdout.strip() == "COMPLETED"


@dataclass
class ResumedRun:
    """A local run of TARGETS, SIGKILLed (the whole process group) as soon as KILL_WHEN exists, then
    resumed with --rerun-incomplete. Its outputs are moved from `out` to `outputs` at the end, so that
    a second run can write the same out_dir path."""

    wf: Path
    out: Path
    outputs: Path
    kill_status: int | None
    log: str
    interrupted: set[Path]  # outputs of the jobs the kill cut short
    before: dict[Path, int]  # mtimes of the outputs of the jobs finished before the kill
    after: dict[Path, int]  # mtimes of the same files after the resumed run
    left_incomplete: set[Path]
    missing: list[Path]  # interrupted outputs the resumed run did not write


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory, job_env: dict[str, str]) -> ResumedRun:
    tmp = tmp_path_factory.mktemp("resumed")
    wf, out = workflow_copy(tmp), tmp / "out"
    with open(tmp / "killed.log", "w") as log:
        killed = subprocess.Popen(
            snakemake(out, "--cores", "2"),
            cwd=wf,
            env=job_env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not list(out.glob(KILL_WHEN)) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    interrupted = recorded(wf, "incomplete")
    finished = recorded(wf, "metadata") - interrupted
    before = mtimes(finished)

    run(wf, job_env, snakemake(out, "--unlock"))
    run(wf, job_env, snakemake(out, "--cores", "2", "--rerun-incomplete"))
    resumed = ResumedRun(
        wf=wf,
        out=out,
        outputs=tmp / "local",
        kill_status=killed.returncode,
        log=(tmp / "killed.log").read_text()[-4000:],
        interrupted=interrupted,
        before=before,
        after=mtimes(finished),
        left_incomplete=recorded(wf, "incomplete"),
        missing=[path for path in interrupted if not path.exists()],
    )
    out.rename(resumed.outputs)
    return resumed


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(resumed: ResumedRun) -> None:
    assert resumed.kill_status == -signal.SIGKILL, f"snakemake ended before the kill:\n{resumed.log}"
    assert resumed.interrupted, "the kill left no job unfinished"
    assert resumed.before, "no job finished before the kill"
    assert resumed.after == resumed.before, "outputs finished before the kill were recomputed"
    assert not resumed.left_incomplete and not resumed.missing


@pytest.mark.slurm
def test_workflow_on_slurm_matches_local_run(
    slurm: None, resumed: ResumedRun, job_env: dict[str, str], tmp_path: Path
) -> None:
    """The Slurm run writes the same out_dir path as the local run (whose outputs were moved aside),
    so that outputs naming their own paths compare too."""
    install_profile(tmp_path / "profile", "--no-account", "--partition", "local")
    on_slurm = ["--profile", str(tmp_path / "profile"), "--retries", "0", "--latency-wait", "10"]
    run(
        resumed.wf,
        job_env,
        snakemake(resumed.out, *on_slurm, "--slurm-init-seconds-before-status-checks", "2"),
    )

    assert files(resumed.out).keys() == files(resumed.outputs).keys()
    identical = files(resumed.outputs, IDENTICAL)
    assert any(name.endswith(".tar") for name in identical), f"no shards among {IDENTICAL}"
    for name, path in identical.items():
        assert (resumed.out / name).read_bytes() == path.read_bytes(), f"{name} differs between executors"
