"""The workflow on a real Slurm: the site profile, Slurm itself, a Snakemake run killed mid-way and
resumed, and the DAG through the executor plugin giving the same outputs as that local run."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from snakemake_executor_plugin_slurm.partitions import read_partition_file

from semtok.cli import main as cli

REPO = Path(__file__).resolve().parents[2]

# The longest chain of the default DAG, run through Slurm: data → teachers → pre-encoding → Stage I →
# Stage II → tokens → generator → samples → generation metrics. Relative to out_dir.
CHAIN = ["data/manifest.json", "metrics/gen/ar-l-main.csv"]
# Outputs that must be byte-identical whichever executor wrote them (globs relative to out_dir).
IDENTICAL = [
    "data/**/*.tar",
    "data/**/*.json",
    "data/**/*.tsv",
    "tokenizer/b18/*/*.safetensors",
    "tokens/b18/*.tar",
]


def install_profile(dest: Path, *flags: str) -> None:
    assert cli.main(["install-profile", "--dest", str(dest), *flags]) == 0


def files(root: Path, patterns: list[str] | None = None) -> dict[str, Path]:
    """Relative path -> path of every file under `root` (matching one of `patterns`)."""
    found = (p for pattern in patterns or ["**/*"] for p in root.glob(pattern))
    return {str(p.relative_to(root)): p for p in found if p.is_file()}


def metric_values(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {row["metric"]: float(row["value"]) for row in csv.DictReader(f)}


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


def test_install_profile_default_is_where_snakemake_finds_profile_slurm(tmp_path, monkeypatch):
    """Snakemake resolves `--profile slurm` through platformdirs: $XDG_CONFIG_HOME/snakemake/slurm
    when that is set, ~/.config/snakemake/slurm otherwise (Linux)."""
    import snakemake.common
    from snakemake.cli import get_profile_dir

    monkeypatch.chdir(tmp_path)  # Snakemake looks in the working directory first
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for xdg in (tmp_path / "xdg", None):
        if xdg is None:
            monkeypatch.delenv("XDG_CONFIG_HOME")
        else:
            monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
        monkeypatch.setattr(snakemake.common, "APPDIRS", None)  # Snakemake caches the folders
        assert cli.main(["install-profile", "--no-account"]) == 0
        found = get_profile_dir("slurm")
        assert found is not None, "snakemake --profile slurm would not find the installed profile"
        expected = (xdg or tmp_path / "home" / ".config") / "snakemake" / "slurm" / "config.yaml"
        assert found[1] == expected


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


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(default_run) -> None:
    assert default_run.kill_status == -signal.SIGKILL, (
        f"snakemake ended before the kill:\n{default_run.killed_log}"
    )
    assert default_run.interrupted, "the kill left no job unfinished"
    assert default_run.before, "no job finished before the kill"
    assert default_run.after == default_run.before, "outputs finished before the kill were recomputed"
    assert not default_run.left_incomplete


@pytest.mark.slurm
def test_workflow_on_slurm_matches_local_run(
    slurm: None, default_run, job_env: dict[str, str], tmp_path: Path
) -> None:
    """The longest chain of the default DAG through the Slurm executor writes the same out_dir path as
    the local run did (its outputs were moved aside), so files naming their own paths compare too:
    shards, manifests and index byte for byte, trained weights and tokens bit for bit, metrics to 1e-6."""
    install_profile(tmp_path / "profile", "--no-account", "--partition", "local")
    out = default_run.out
    on_slurm = [
        "--profile",
        str(tmp_path / "profile"),
        "--retries",
        "0",
        "--latency-wait",
        "10",
        "--slurm-init-seconds-before-status-checks",
        "2",
    ]
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *(str(out / t) for t in CHAIN),
        *on_slurm,
        "--config",
        f"out_dir={out}",
    ]
    done = subprocess.run(
        command, cwd=default_run.wf, env=job_env, capture_output=True, text=True, timeout=3000
    )
    assert done.returncode == 0, done.stderr[-6000:]
    assert "slurm" in done.stderr.lower()

    local = files(default_run.outputs)
    on_cluster = {k: v for k, v in files(out).items() if not k.startswith("logs/")}
    assert on_cluster and on_cluster.keys() <= local.keys()
    identical = files(out, IDENTICAL)
    assert any(n.endswith(".safetensors") for n in identical) and any(n.endswith(".tar") for n in identical)
    for name, path in identical.items():
        assert path.read_bytes() == local[name].read_bytes(), f"{name} differs between executors"
    for name in CHAIN[1:]:
        # FID's matrix square root (scipy) is not bit-reproducible across processes: 1e-6 relative.
        assert metric_values(out / name) == pytest.approx(metric_values(default_run.outputs / name), rel=1e-6)


@pytest.mark.slurm
def test_paper_dag_on_the_slurm_profile_lists_the_paper_resources(slurm: None, tmp_path: Path) -> None:
    """`snakemake -n --profile <site profile> --configfile config/paper.yaml all_tables` lists the
    whole paper DAG with the workflow profile's resources (SPEC §7 scale)."""
    root = tmp_path / "imagenet"
    for wnid in ("n01440764", "n01443537"):
        (root / "train" / wnid).mkdir(parents=True)
        (root / "val" / wnid).mkdir(parents=True)
    batch = tmp_path / "VIRTUAL_imagenet256_labeled.npz"  # ADM's reference batch, a stand-in file
    np.savez(batch, arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=np.zeros(4), sigma=np.eye(4))
    install_profile(tmp_path / "profile", "--no-account", "--partition", "local")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "all_tables",
            "-n",
            "--profile",
            str(tmp_path / "profile"),
            "--configfile",
            "config/paper.yaml",
            "--config",
            f'overrides=["data.imagenet_root={root}", "evaluation.fid_reference={batch}"]',
            f"out_dir={tmp_path / 'results'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "workflow specific profile profiles/default" in text
    stats = text.split("Job stats:", 1)[1]
    assert re.search(r"^total\s+14433$", stats.split("\n\n", 1)[0], re.M)  # every job of the paper DAG

    def resources(rule: str) -> str:
        block = text.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
        return next(line for line in block.splitlines() if "resources:" in line)

    assert all(
        s in resources("stage1") for s in ("nodes=4", "gres=gpu:8", "cpus_per_task=16", "runtime=2880")
    )
    assert all(s in resources("train_ar") for s in ("nodes=4", "gres=gpu:8"))
    assert "gres=gpu:1" in resources("encode_shard") and "slurm_partition=local" in resources("encode_shard")
    assert "gres" not in resources("shard_images") and "cpus_per_task=4" in resources("shard_images")


@pytest.mark.slurm
@pytest.mark.parametrize("cpus", [1, 2])
def test_a_job_runs_as_many_threads_as_its_allocation_has_cpus(
    slurm: None, job_env: dict[str, str], tmp_path: Path, cpus: int
) -> None:
    """Under Slurm a job's torch threads are its allocation's CPUs (compute.threads: 0), whatever
    OMP_NUM_THREADS Snakemake exported for the rule (1): started by the launcher, as the rules do."""
    log = tmp_path / "job.log"
    overrides = [
        "--set",
        "compute.threads=0",
        "--set",
        "pretrained.inception.source=random",
        "--set",
        f"out_dir={tmp_path}",
    ]
    command = (
        f"OMP_NUM_THREADS=1 SEMTOK_JOB_LOG={log} {sys.executable} -m semtok.cli.launch reference-standin "
        f"--config {REPO / 'config' / 'config.yaml'} {' '.join(overrides)} --output {tmp_path / 'ref.npz'}"
        f" > {log} 2>&1"
    )
    job = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--wait",
            f"--cpus-per-task={cpus}",
            "-o",
            str(tmp_path / "sbatch.out"),
            "--wrap",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=job_env,
        cwd=REPO,
    )
    text = log.read_text() if log.exists() else ""
    assert job.returncode == 0, f"{job.stderr}\n{text[-3000:]}"
    assert f"INFO semtok: {cpus} torch CPU thread(s)" in text, text[-3000:]
