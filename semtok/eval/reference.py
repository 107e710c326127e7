"""`semtok eval-reference --output NPZ`: the real-image side of every FID/PR number, computed once.

Features of the validation images (the first `evaluation.recon_images`, in key order) with the
configured extractor: `fid` features (N, D), their `mu`/`sigma` (ADM's npz keys, so the file can
also serve as a statistics file), and the extractor's protocol string. Reconstruction FID compares
against these images; generation FID against `evaluation.fid_reference` (ADM's
`VIRTUAL_imagenet256_labeled.npz` on a cluster) when set, else against these statistics.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semtok import registry
from semtok.config import Config
from semtok.eval.features import FeatureSetup, extract_features
from semtok.eval.metrics import stats_from_features
from semtok.utils.io import save_npz

NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="the reference .npz to write")


def val_batches(cfg: Config, batch_size: int, features: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Validation batches in key order, unflipped, at most `evaluation.recon_images` images."""
    from semtok.data.loader import make_loader

    loader = make_loader(
        cfg,
        "val",
        batch_size=batch_size,
        features=features,
        images=True,
        shuffle=False,
        flip=False,
        resample=False,
        epochs=1,
        num_workers=0,
    )
    left = cfg.evaluation.recon_images
    for batch in loader:
        if left <= 0:
            return
        take = min(left, len(batch["key"]))
        left -= take
        yield {k: v[:take] for k, v in batch.items()}


def images_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] → (B, H, W, 3) uint8."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def fid_setup(cfg: Config) -> FeatureSetup:
    setup = registry.load_fid_extractor(cfg)
    if torch.cuda.is_available():
        setup.extractor.cuda()
    return setup


def compute_reference(cfg: Config, output: Path) -> dict[str, Any]:
    setup = fid_setup(cfg)
    images = np.concatenate([images_uint8(b["image"]) for b in val_batches(cfg, cfg.evaluation.batch_size)])
    feats = extract_features(setup.extractor, images, batch_size=cfg.evaluation.batch_size)
    fid = feats[setup.feature_names["fid"]]
    stats = stats_from_features(fid)
    save_npz(output, fid=fid, mu=stats.mu, sigma=stats.sigma, protocol=np.asarray(setup.protocol))
    return {"images": len(images), "protocol": setup.protocol, "output": str(output)}


def load_reference(path: Path) -> tuple[np.ndarray, str]:
    with np.load(path) as ref:
        return ref["fid"], str(ref["protocol"])


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return compute_reference(cfg, Path(args.output))
