"""The paper's chain at the paper's shapes, through Snakemake on the CPU: config/paper.yaml with the
overlay config/paper-smoke.yaml (reduced depths and counts, random stand-ins of the same classes and
widths), from a 256-px JPEG tree to Table 1 and Table 2. Each boundary's shapes are checked against the
paper's (SPEC: 16x32x32 latents, SigLIP 2 so400m features, K = 256 tokens of d = 18 bits, an 8x768
encoder's width, SD3.5-Medium's 1536-wide decoder, AR-L/XL/XXL widths, 256-px samples), and every metric
is finite. torch.compile runs in the trainers (on the CPU through aot_eager).

Two settings differ from a GPU node's smoke run, for time on 2 CPU cores:
- `compute.mixed_precision=no`: on a CPU without native bf16 (AVX2, as here) bf16 products at these
  widths run at 0.4-6 GFLOP/s against 32 in float32 (benchmarks/bench_precision.py); one Stage I step of
  batch 2 had not finished after 5 minutes, the whole float32 job takes about 1. The trainers' bf16 path
  is tested at the tiny widths (tests/train/test_bf16_compile.py).
- `generator.sample.steps=4` instead of the paper's 64: each step is a full forward pass of the
  generator at its width."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from semtok import paths
from semtok.config import SyntheticConfig
from semtok.data import synthetic
from semtok.data.images import decode_rgb
from semtok.data.shards import npy_array, read_shard

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.paper_smoke]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A 3-class 256-px JPEG tree in ImageNet's layout, then `snakemake table1 table2` with the paper
    config and the smoke overlay on the CPU; gives (out_dir, seconds, peak bytes on disk)."""
    tmp = tmp_path_factory.mktemp("paper-smoke")
    root = tmp / "imagenet"
    synthetic.write_dataset(
        SyntheticConfig(
            num_classes=3, train_per_class=3, val_per_class=4, min_size=256, max_size=320, seed=0
        ),
        root,
    )
    out = tmp / "results"
    overrides = [
        f"data.imagenet_root={root}",
        f"out_dir={out}",
        "compute.device=cpu",
        "compute.mixed_precision=no",
        # the paper's 64 sampling steps cost 64 full forward passes of each generator: AR-L's 12 samples
        # took 7 min here (1 thread, float32), XXL's width 2048 would take about 4x that
        "generator.sample.steps=4",
    ]
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "table1",
        "table2",
        "--cores",
        "2",
        "--configfile",
        "config/paper.yaml",
        "config/paper-smoke.yaml",
        "--config",
        f"overrides={json.dumps(overrides)}",
    ]
    started = time.monotonic()
    with DiskPeak(tmp) as disk:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((out / "logs").glob("*.log"))
    )
    assert done.returncode == 0, f"{done.stderr[-5000:]}\n{logs[-20000:]}"
    print(f"paper-shape smoke chain: {seconds / 60:.1f} min, at most {disk.peak / 1e9:.2f} GB on disk")
    yield out, seconds, disk.peak
    # the weights are a few GB (the tests read their configs): give the space back to the rest of the suite
    shutil.rmtree(tmp, ignore_errors=True)


class DiskPeak:
    """The largest number of bytes of files under `folder` seen while the block runs (sampled each 0.5 s)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.peak = folder, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _size(self) -> int:
        total = 0
        for parent, _, files in os.walk(self.folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(parent, name)).st_size
                except OSError:  # removed meanwhile
                    pass
        return total

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._size())

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._size())


def first(path: Path) -> dict:
    return next(read_shard(path))


def test_images_latents_and_siglip_features_have_the_paper_shapes(smoke):
    out, *_ = smoke
    sample = first(paths.image_shard(out, "train", 0))
    assert decode_rgb(sample["jpg"]).shape == (256, 256, 3)
    latents = first(paths.feature_shard(out, "latents", "train", 0))
    assert (
        npy_array(latents["latent.npy"]).shape == npy_array(latents["latent_flip.npy"]).shape == (16, 32, 32)
    )
    siglip = first(paths.feature_shard(out, "siglip", "train", 0))
    assert npy_array(siglip["siglip.npy"]).shape == (
        256,
        1152,
    )  # so400m/16 at 256 px: 16x16 patches, 1152 wide


def test_the_tokenizer_has_the_paper_widths_and_tokens(smoke):
    out, *_ = smoke
    for stage in ("stage1", "stage2"):
        config = json.loads((paths.tokenizer_dir(out, "b18", stage) / "config.json").read_text())
        enc, dec = config["encoder_config"], config["decoder_config"]["transformer_config"]
        assert (enc["num_tokens"], enc["token_dim"], enc["width"], enc["heads"]) == (256, 18, 768, 12)
        assert dec["num_attention_heads"] * dec["attention_head_dim"] == 1536 and dec["patch_size"] == 2
        assert config["decoder_config"]["refiner"] is (stage == "stage2")
    b32 = json.loads((paths.tokenizer_dir(out, "b32", "stage2") / "config.json").read_text())
    assert b32["encoder_config"]["token_dim"] == 32
    tokens = first(paths.token_shard(out, "b18", 0))
    assert (
        npy_array(tokens["bits.npy"]).shape == npy_array(tokens["bits_flip.npy"]).shape == (256, 3)
    )  # 18 bits


def test_the_generators_have_the_paper_widths_and_sample_256_px_images(smoke):
    out, *_ = smoke
    for variant, (width, heads) in {"ar-l": (1024, 16), "ar-xl": (1280, 20), "ar-xxl": (2048, 32)}.items():
        config = json.loads((paths.generator_dir(out, variant) / "config.json").read_text())
        assert (config["width"], config["heads"], config["num_tokens"], config["bits"]) == (
            width,
            heads,
            256,
            18,
        )
        with np.load(paths.sample_file(out, variant, "main")) as f:
            assert f["arr_0"].shape == (12, 256, 256, 3) and f["arr_0"].dtype == np.uint8


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {r["metric"]: r for r in csv.DictReader(f)}


def test_every_metric_is_finite_and_names_its_stand_in_protocol(smoke):
    out, *_ = smoke
    gen = rows(paths.gen_metrics(out, "ar-l", "main"))
    for metric in ("gFID", "IS", "Precision", "Recall", "class_acc"):
        assert math.isfinite(float(gen[metric]["value"])), metric
    assert "inception-v3-compat-random" in gen["gFID"]["protocol"]
    recon = rows(paths.recon_metrics(out, "b18", "refiner"))
    for metric in ("rFID", "PSNR", "SSIM", "LPIPS", "class_acc"):
        assert math.isfinite(float(recon[metric]["value"])), metric
    for table in ("table1", "table2"):
        with open(paths.table_file(out, table, "csv")) as f:
            ours = [r["ours"] for r in csv.DictReader(f) if r["ours"] not in ("", "–", "n/a")]
        assert ours and all(math.isfinite(float(v)) for v in ours), table


def test_the_trainers_compiled_their_blocks_and_logged_with_timestamps(smoke):
    out, *_ = smoke
    for log in ("stage1_b18", "stage2_b18", "train_ar_ar-l"):
        text = (out / "logs" / f"{log}.log").read_text()
        assert "mixed precision no" in text and "transformer blocks compiled (backend aot_eager)" in text, log
        assert "===== attempt 1 of semtok" in text
        stamped = [line for line in text.splitlines() if line and not line.startswith("=====")]
        assert stamped and all(line[:4].isdigit() and line[4] == "-" for line in stamped), log


def test_the_chain_fits_in_a_few_gigabytes_of_disk(smoke):
    """Its four tokenizer exports carry SD3.5's VAE and decoder blocks at the paper's widths (about 0.95 GB
    each); the 384x384 positional table of SD3 would add 906 MB to each, which once filled a CI machine's
    disk (7.9 GB at the peak). The overlay keeps the positions 256-px latents use (4.5 GB at the peak)."""
    *_, peak = smoke
    assert peak < 5.5e9, f"the chain's files reached {peak / 1e9:.2f} GB"
