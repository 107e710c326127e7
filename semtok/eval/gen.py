"""`semtok eval-gen --variant G --setting S --samples NPZ ...`: generation metrics (SPEC §5).

gFID against `evaluation.fid_reference` (an ADM statistics npz such as
`VIRTUAL_imagenet256_labeled.npz`, for numbers comparable with published ones) when set, else against
the validation-image statistics of `semtok eval-reference`; Inception Score; Precision and Recall
(k = `evaluation.pr_k`) against the validation features. The protocol column records which
extractor, reference and sample count produced each number.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from semtok import paths
from semtok.config import Config, section_hash
from semtok.eval.features import extract_features
from semtok.eval.metrics import (
    frechet_distance,
    inception_score,
    load_stats,
    precision_recall,
    stats_from_features,
)
from semtok.eval.records import write_metrics
from semtok.eval.reference import fid_setup, load_reference

NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="generator variant")
    parser.add_argument("--setting", required=True, help="sampling setting of the sample file")
    parser.add_argument("--samples", required=True, help="npz with arr_0 (N, H, W, 3) uint8")
    parser.add_argument("--reference", required=True, help="validation features (semtok eval-reference)")
    parser.add_argument("--output", required=True, help="metrics CSV")


def generator_parameters(folder: Path) -> int:
    """Parameter count of a saved generator, read from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            total += sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    if total == 0:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    return total


def evaluate(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    with np.load(args.samples) as f:
        images = f["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"{args.samples}: arr_0 must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    setup = fid_setup(cfg)
    feats = extract_features(setup.extractor, images, batch_size=cfg.evaluation.batch_size)
    fake = feats[setup.feature_names["fid"]]
    ref_feats, ref_protocol = load_reference(Path(args.reference))
    if ref_protocol != setup.protocol:
        raise RuntimeError(
            f"{args.reference} was made with {ref_protocol}, not {setup.protocol}: rerun eval-reference"
        )
    n = len(images)
    if cfg.evaluation.fid_reference:
        ref_stats, ref_name = (
            load_stats(cfg.evaluation.fid_reference),
            Path(cfg.evaluation.fid_reference).name,
        )
    else:
        ref_stats, ref_name = stats_from_features(ref_feats), f"val-images({len(ref_feats)})"
    is_mean, is_std = inception_score(feats[setup.feature_names["is"]])
    precision, recall = precision_recall(ref_feats, fake, k=cfg.evaluation.pr_k)
    values = {
        "gFID": frechet_distance(stats_from_features(fake), ref_stats),
        "IS": is_mean,
        "IS_std": is_std,
        "Precision": precision,
        "Recall": recall,
    }
    base = f"fid={setup.protocol} n={n}"
    protocols = {
        "gFID": f"{base} ref={ref_name}",
        "IS": f"{base} splits=10",
        "IS_std": f"{base} splits=10",
        "Precision": f"{base} ref=val-images({len(ref_feats)}) k={cfg.evaluation.pr_k}",
        "Recall": f"{base} ref=val-images({len(ref_feats)}) k={cfg.evaluation.pr_k}",
    }
    values["params"] = float(generator_parameters(paths.generator_dir(cfg.out, args.variant)))
    protocols["params"] = "safetensors element count"
    g = cfg.generator_variant(args.variant)
    config_hash = section_hash(
        g, cfg.tokenizer_variant(g.tokenizer), cfg.evaluation.fid_reference, args.setting
    )
    write_metrics(
        Path(args.output),
        run_id=cfg.run_id,
        kind="gen",
        variant=args.variant,
        setting=args.setting,
        values=values,
        protocols=protocols,
        config_hash=config_hash,
        n_samples=n,
    )
    return {"variant": args.variant, "setting": args.setting, **values}


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return evaluate(cfg, args)
