"""The real-image side of every FID/PR number, computed once (the `eval-reference` job,
semtok/jobs/evaluation.py).

- The validation images (the first `evaluation.recon_images`, in key order): features `fid` (N, D)
  of the configured extractor and their `mu`/`sigma` (ADM's npz keys). Reconstruction FID compares
  against these images.
- The generation reference. With `evaluation.fid_reference` (ADM's `VIRTUAL_imagenet256_labeled.npz`
  in the paper config) it is that batch, used as ADM's evaluator uses it: gFID against the file's
  own `mu`/`sigma`, precision/recall against the features of its `arr_0` images (`gen_mu`,
  `gen_sigma`, `gen_fid`, `gen_ref`). Without it, the validation images stand in.
- `class_acc` of the frozen classifier (registry.load_accuracy_classifier) on the validation images,
  the accuracy a perfect reconstruction would keep: a metrics CSV row of variant `original`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semtok import paths, registry
from semtok.config import Config
from semtok.eval.features import FeatureSetup, extract_features
from semtok.eval.metrics import FeatureStats, stats_from_features


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


def validation_images(cfg: Config) -> int:
    """How many images `val_batches` yields: `evaluation.recon_images`, at most the validation split."""
    from semtok.data.imagenet import iter_index

    index = paths.index_file(cfg.out, "val")
    listed = sum(1 for row in iter_index(index) if not row.rejected) if index.is_file() else None
    return cfg.evaluation.recon_images if listed is None else min(cfg.evaluation.recon_images, listed)


def data_tag(cfg: Config) -> str:
    """The images a reconstruction metric is computed on, for its protocol: `imagenet-val-256px`."""
    return f"{cfg.data.source}-val-{cfg.data.resolution}px"


def on_device(cfg: Config, module: torch.nn.Module) -> torch.nn.Module:
    """`module` on the job's device (`compute.device`, semtok/utils/devices.py)."""
    from semtok.utils.devices import job_device

    return module.to(job_device(cfg.compute))


def fid_setup(cfg: Config) -> FeatureSetup:
    setup = registry.load_fid_extractor(cfg)
    on_device(cfg, setup.extractor)
    return setup


def read_reference_batch(path: Path) -> tuple[np.ndarray, FeatureStats]:
    """ADM's reference-batch layout: `arr_0` (N, H, W, 3) uint8 images, `mu` (D,), `sigma` (D, D)."""
    with np.load(path) as data:
        missing = [key for key in ("arr_0", "mu", "sigma") if key not in data.files]
        if missing:
            raise ValueError(
                f"{path}: not an ADM reference batch, missing key(s) {missing} (found {data.files}); "
                "expected arr_0 (N, H, W, 3) uint8, mu (D,), sigma (D, D)"
            )
        images, mu, sigma = data["arr_0"], data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not (D,) and (D, D)")
    return images, FeatureStats(mu=mu, sigma=sigma, n=None)


def write_reference_standin(cfg: Config, output: Path, count: int = 32) -> dict[str, Any]:
    """A stand-in for ADM's reference batch in its layout (`evaluation.fid_reference: standin`): `count`
    random uint8 images at the data resolution drawn from the run's seed, and the `mu`/`sigma` of their
    features under the configured extractor (so gFID against it is finite and consistent)."""
    from semtok.utils.io import save_npz

    size = cfg.data.resolution
    images = np.random.default_rng(cfg.seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    setup = fid_setup(cfg)
    feats = extract_features(setup.extractor, images, batch_size=cfg.evaluation.batch_size)
    stats = stats_from_features(feats[setup.feature_names["fid"]])
    save_npz(output, arr_0=images, mu=stats.mu, sigma=stats.sigma)
    return {"images": count, "protocol": setup.protocol, "output": str(output)}


@dataclass(frozen=True)
class Reference:
    """The contents of an eval-reference npz.

    val_fid: (N, D) validation features; gen_fid: (M, D) features of the generation reference's
    images and gen_stats the statistics gFID uses; gen_name: what the protocol calls that reference.
    """

    protocol: str
    val_fid: np.ndarray
    gen_fid: np.ndarray
    gen_stats: FeatureStats
    gen_name: str


def generation_reference(
    cfg: Config, setup: FeatureSetup, val_fid: np.ndarray
) -> tuple[np.ndarray, FeatureStats, str]:
    """(features, statistics, name) of the generation reference: ADM's batch when configured."""
    path = registry.reference_batch(cfg)
    if path is None:
        return val_fid, stats_from_features(val_fid), f"val-images({len(val_fid)})"
    images, stats = read_reference_batch(path)
    feats = extract_features(setup.extractor, images, batch_size=cfg.evaluation.batch_size)
    feats = feats[setup.feature_names["fid"]]
    if feats.shape[1] != len(stats.mu):
        raise ValueError(
            f"evaluation.fid_reference: {path} holds {len(stats.mu)}-dimensional statistics, but the "
            f"extractor {setup.protocol} gives {feats.shape[1]} features; ADM's batch needs "
            "pretrained.inception.source: pretrained"
        )
    return feats, stats, path.name


def load_reference(path: Path) -> Reference:
    with np.load(path) as ref:
        return Reference(
            protocol=str(ref["protocol"]),
            val_fid=ref["fid"],
            gen_fid=ref["gen_fid"],
            gen_stats=FeatureStats(mu=ref["gen_mu"], sigma=ref["gen_sigma"], n=None),
            gen_name=str(ref["gen_ref"]),
        )
