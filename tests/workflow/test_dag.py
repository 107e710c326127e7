"""The Snakemake DAG: the paper config against a fake ImageNet tree, validation errors at DAG start."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def fake_imagenet(root: Path) -> Path:
    """train/<wnid>/*.JPEG for two synsets and the flat val folder with LOC_val_solution.csv."""
    rng = np.random.default_rng(0)
    wnids = ["n01440764", "n01443537"]
    lines = ["ImageId,PredictionString"]
    for c, wnid in enumerate(wnids):
        (root / "train" / wnid).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / wnid / f"{wnid}_{i}.JPEG")
        image_id = f"ILSVRC2012_val_{c + 1:08d}"
        (root / "val").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
            root / "val" / f"{image_id}.JPEG"
        )
        lines.append(f"{image_id},{wnid} 1 2 3 4")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def dry_run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, *args, "-n", "--quiet", "rules"], cwd=cwd, capture_output=True, text=True, timeout=900
    )


def test_paper_config_dry_run_against_a_fake_imagenet_lists_the_paper_dag(tmp_path):
    root = fake_imagenet(tmp_path / "imagenet")
    batch = tmp_path / "VIRTUAL_imagenet256_labeled.npz"
    np.savez(batch, arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=np.zeros(4), sigma=np.eye(4))
    done = dry_run(
        "all_tables",
        "--configfile",
        "config/paper.yaml",
        "--config",
        f'overrides=["data.imagenet_root={root}", "evaluation.fid_reference={batch}"]',
        f"out_dir={tmp_path / 'results'}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout + done.stderr)
    train, val = 1282, 50
    expected = {
        "index_split": 2,
        "shard_images": train + val,
        "encode_shard": 2 * (train + val),  # latents and SigLIP features per shard
        "stage1": 8,  # b18 b32 lfq no-contra no-distill no-sem raster grid2d
        "stage2": 11,  # + finetune-only lpips-only resnet-only
        "dump_tokens": 6 * train,  # b18 no-sem no-contra no-distill raster grid2d
        "train_ar": 9,
        "eval_reference": 1,
        "eval_recon": 11,
        "eval_recon_diffusion": 8,  # every variant with its own Stage I (learning table)
        "eval_vae": 1,
        "learning": 1,
        "data_summary": 1,
        "all_tables": 1,
    }
    for rule, count in expected.items():
        assert counts.get(rule) == count, f"{rule}: {counts.get(rule)} jobs, expected {count}"
    tables = {f"table{i}" for i in (1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14)}
    figures = {f"fig{i}" for i in range(3, 13)} | {"table7"}
    assert tables | figures <= counts.keys()
    assert "teacher" not in counts  # the paper loads real weights, nothing is bootstrapped
    # sampling: every generator's main samples plus the sweeps of config/paper.yaml
    assert counts["sample"] == counts["eval_gen"] + 2  # "progressive" samples feed figures only


def test_paper_config_without_the_reference_batch_stops_saying_what_to_set(tmp_path):
    root = fake_imagenet(tmp_path / "imagenet")
    done = dry_run(
        "all_tables",
        "--configfile",
        "config/paper.yaml",
        "--config",
        f'overrides=["data.imagenet_root={root}", "pretrained.cache_dir={tmp_path / "cache"}"]',
        f"out_dir={tmp_path / 'results'}",
    )
    assert done.returncode != 0
    message = " ".join((done.stdout + done.stderr).split())
    assert (
        f"evaluation.fid_reference: {tmp_path / 'cache'}/ref_batches/VIRTUAL_imagenet256_labeled.npz"
        in message
    )
    assert "run `snakemake prefetch_weights`" in message
    assert "or set evaluation.fid_reference to a local copy" in message
    assert not (tmp_path / "results" / "data").exists()


def test_bad_config_stops_the_dag_naming_the_key(tmp_path):
    done = dry_run(
        "all_tables", "--config", 'overrides=["tokenizer.stage1.optim.lr=fast"]', f"out_dir={tmp_path}"
    )
    assert done.returncode != 0
    assert "tokenizer.stage1.optim.lr: expected float, got str ('fast')" in done.stdout + done.stderr


def test_imagenet_source_without_a_root_is_refused(tmp_path):
    done = dry_run("all_tables", "--configfile", "config/paper.yaml", "--config", f"out_dir={tmp_path}")
    assert done.returncode != 0
    assert "data.imagenet_root: required" in done.stdout + done.stderr


def test_default_config_dry_run_builds_everything_from_the_synthetic_data(tmp_path):
    done = dry_run("all_tables", "--config", f"out_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = job_counts(done.stdout + done.stderr)
    assert counts["synthetic_imagenet"] == 1 and counts["teacher"] == 4
    assert counts["stage1"] == 8 and counts["stage2"] == 11 and counts["train_ar"] == 9
