"""Shared test setup.

- Tiny models run fastest single-threaded on the 2-core CI machine (the thread pool's overhead
  dominates their small matmuls, and concurrent test processes oversubscribe).
- A tiny config (config/config.yaml with small sizes and random frozen networks) and built shard
  sets, for every test package.
"""

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
import torch
import yaml

from semtok import paths
from semtok.config import Config, from_dict
from semtok.data import encode, imagenet, shards, synthetic

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)

TINY = [
    "data.synthetic.num_classes=4",
    "data.synthetic.train_per_class=6",
    "data.synthetic.val_per_class=3",
    "data.synthetic.min_size=40",
    "data.synthetic.max_size=72",
    "data.resolution=32",
    "data.train_shards=2",
    "data.val_shards=1",
    "data.encode_batch_size=8",
    "data.shuffle_buffer=16",
    "compute.num_workers=0",
    "pretrained.vae.source=random",
    "pretrained.vae.arch={block_out_channels: [8, 8, 8], layers_per_block: 1, latent_channels: 4,"
    " norm_num_groups: 4, scaling_factor: 2.0, shift_factor: 0.5}",
    "pretrained.siglip.source=random",
    "pretrained.siglip.arch={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1,"
    " num_attention_heads: 2, image_size: 32, patch_size: 8}",
]


def tiny_config(out_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["out_dir"] = str(out_dir)
    return from_dict(raw, TINY + list(overrides))


def build_image_shards(cfg: Config) -> dict[str, list[dict]]:
    """Synthetic dataset → index → image shards for both splits; returns the manifests per split."""
    synthetic.write_dataset(cfg.data.synthetic, paths.synthetic_root(cfg.out))
    manifests = {}
    for split in paths.SPLITS:
        rows, _ = imagenet.build_index(cfg, split)
        imagenet.write_index(rows, paths.index_file(cfg.out, split))
        count = rows[-1].shard + 1
        manifests[split] = [
            shards.write_image_shard(
                [r for r in rows if r.shard == i],
                paths.image_shard(cfg.out, split, i),
                resolution=cfg.data.resolution,
                quality=cfg.data.jpeg_quality,
            )
            for i in range(count)
        ]
    return manifests


def build_feature_shards(cfg: Config) -> None:
    for kind in encode.KINDS:
        for split, count in (("train", cfg.data.train_shards), ("val", cfg.data.val_shards)):
            for i in range(count):
                encode.encode_shard(
                    cfg,
                    kind,
                    paths.image_shard(cfg.out, split, i),
                    paths.feature_shard(cfg.out, kind, split, i),
                )


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return tiny_config(tmp_path)


@pytest.fixture(scope="module")
def built_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A config whose image, latent and SigLIP shards all exist (built once per test module)."""
    config = tiny_config(tmp_path_factory.mktemp("built"))
    build_image_shards(config)
    build_feature_shards(config)
    return config


@pytest.fixture
def make_cfg(tmp_path: Path):
    """make_cfg(overrides, out_dir=tmp_path) → a tiny Config."""

    def make(overrides: list[str] | tuple[str, ...] = (), out_dir: Path | None = None) -> Config:
        return tiny_config(out_dir or tmp_path, overrides)

    return make


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium for the tests that render pages (tests/browser.py): installed with apt-get when
    it is missing and the tests run as root; skipped only where neither is possible."""
    from browser import BrowserUnavailable, find_chromium

    try:
        return find_chromium()
    except BrowserUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def tiny():
    """The helpers above, for module-scoped fixtures elsewhere: tiny.config(out_dir, overrides),
    tiny.build_images(cfg), tiny.build_features(cfg)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        config=tiny_config, build_images=build_image_shards, build_features=build_feature_shards
    )


# ---------------------------------------------------------------------------------------------
# The default DAG, run once per session: `snakemake --cores 2 all_tables` on config/config.yaml,
# SIGKILLed (the whole process group) as soon as the first image shard exists, then finished with
# `--rerun-incomplete`. The end-to-end tests read its outputs; the Slurm test reruns part of the DAG
# through Slurm into the same out_dir path and compares.

KILL_WHEN = "data/shards/*/*.tar"


def workflow_copy(tmp: Path) -> Path:
    """The repository's workflow (Snakefile, rules, configs) in a folder of its own."""
    wf = tmp / "wf"
    wf.mkdir()
    shutil.copy(ROOT / "Snakefile", wf)
    for folder in ("workflow", "config"):
        shutil.copytree(ROOT / folder, wf / folder)
    return wf


@pytest.fixture(scope="session")
def copy_workflow():
    """`workflow_copy`, for test modules that cannot import it (tests/report/conftest.py shadows the name
    `conftest` at collection)."""
    return workflow_copy


def snakemake_command(out: Path, targets: list[str], *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *targets, *args, "--config", f"out_dir={out}"]


def run_snakemake(wf: Path, command: list[str], timeout: int = 3600) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=wf, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-6000:]}"
    return done


def recorded(wf: Path, kind: str) -> set[Path]:
    """Outputs in Snakemake's records of `wf`: kind "metadata" = written by a job that finished,
    "incomplete" = of a job that started and did not finish (record names are base64 paths)."""
    root = wf / ".snakemake" / kind
    records = (p.relative_to(root).parts for p in root.rglob("*") if p.is_file())
    return {
        Path(urlsafe_b64decode("".join(part.lstrip("@") for part in parts)).decode()) for parts in records
    }


def mtimes(paths_: set[Path]) -> dict[Path, int]:
    found = [q for p in paths_ for q in ([p] if p.is_file() else p.rglob("*"))]
    return {p: p.stat().st_mtime_ns for p in found}


@dataclass
class DefaultRun:
    wf: Path  # the workflow folder it ran in
    out: Path  # the out_dir path it wrote (empty after the run: outputs moved to `outputs`)
    outputs: Path
    wall_s: float  # both runs together
    report: Path  # `snakemake --report` of the finished run
    metadata: Path  # a copy of Snakemake's records of the finished run (later tests run in `wf` too)
    kill_status: int | None
    killed_log: str
    interrupted: set[Path]
    before: dict[Path, int]  # mtimes of outputs finished before the kill
    after: dict[Path, int]  # the same files after the resumed run
    left_incomplete: set[Path]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> DefaultRun:
    tmp = tmp_path_factory.mktemp("default-run")
    wf, out = workflow_copy(tmp), tmp / "results"
    started = time.monotonic()
    with open(tmp / "killed.log", "w") as log:
        killed = subprocess.Popen(
            snakemake_command(out, ["all_tables"], "--cores", "2"),
            cwd=wf,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 600
        while not list(out.glob(KILL_WHEN)) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    interrupted = recorded(wf, "incomplete")
    finished = recorded(wf, "metadata") - interrupted
    before = mtimes(finished)
    run_snakemake(wf, snakemake_command(out, ["all_tables"], "--unlock"))
    run_snakemake(wf, snakemake_command(out, ["all_tables"], "--cores", "2", "--rerun-incomplete"))
    wall = time.monotonic() - started
    run_snakemake(wf, snakemake_command(out, ["all_tables"], "--report", str(tmp / "report.html")))
    shutil.copytree(wf / ".snakemake" / "metadata", tmp / "metadata")
    run = DefaultRun(
        wf=wf,
        out=out,
        outputs=tmp / "local",
        wall_s=wall,
        report=tmp / "report.html",
        metadata=tmp / "metadata",
        kill_status=killed.returncode,
        killed_log=(tmp / "killed.log").read_text()[-4000:],
        interrupted=interrupted,
        before=before,
        after=mtimes(finished),
        left_incomplete=recorded(wf, "incomplete"),
    )
    out.rename(run.outputs)
    return run
