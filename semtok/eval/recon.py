"""`semtok eval-recon --variant V --mode refiner|diffusion ...`: reconstruction metrics (SPEC §5).

Validation images (the first `evaluation.recon_images`, key order) → pre-encoded latents → tokens →
decoder (one-step refiner of Stage II, or Stage I's 25-step flow sampler) → VAE → uint8. Metrics:
rFID (reconstructions vs the same validation images, the configured extractor), PSNR and SSIM on
uint8 RGB per image then averaged, LPIPS (the metric network of the registry, AlexNet by
convention), bits per pixel d·K/(H·W), codebook usage. Also writes reconstruction examples
(Fig. 3, Table 7 visual) and, in refiner mode, the mean-pooled encoder features of Fig. 6.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semtok import paths, registry
from semtok.config import Config, section_hash
from semtok.eval.features import extract_features
from semtok.eval.metrics import frechet_distance, lpips_distance, psnr_uint8, ssim_uint8, stats_from_features
from semtok.eval.records import write_metrics
from semtok.eval.reference import fid_setup, images_uint8, load_reference, val_batches
from semtok.utils.io import save_npz

NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="tokenizer variant")
    parser.add_argument("--mode", choices=("refiner", "diffusion"), default="refiner")
    parser.add_argument("--reference", required=True, help="validation features (semtok eval-reference)")
    parser.add_argument("--output", required=True, help="metrics CSV")
    parser.add_argument("--examples", required=True, help="npz of a few originals and reconstructions")
    parser.add_argument("--features", help="npz of pooled encoder features (Fig. 6); refiner mode")


def load_for_mode(cfg: Config, variant: str, mode: str, device: torch.device) -> Any:
    from semtok.models.tokenizer import SemTok

    stage = "stage2" if mode == "refiner" else "stage1"
    return SemTok.from_pretrained(paths.tokenizer_dir(cfg.out, variant, stage)).to(device).eval()


@torch.no_grad()
def evaluate(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_for_mode(cfg, args.variant, args.mode, device)
    t = cfg.tokenizer_variant(args.variant)
    gen = torch.Generator().manual_seed(cfg.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    originals, recons, pooled, labels, indices = [], [], [], [], []
    for batch in val_batches(cfg, cfg.evaluation.batch_size, features=("latents",)):
        latents = batch["latent"].to(device)
        with autocast:
            enc, q = tok.quantize(latents)
            recon = tok.decode_codes(q.codes, args.mode, t.sampler.steps, t.sampler.shift, gen)
        originals.append(images_uint8(batch["image"]))
        recons.append(images_uint8(recon.float().cpu()))
        pooled.append(enc.features.float().mean(1).cpu().numpy())
        labels.append(batch["cls"].numpy())
        indices.append(q.indices.cpu())
    orig, rec = np.concatenate(originals), np.concatenate(recons)
    setup = fid_setup(cfg)
    ref_feats, ref_protocol = load_reference(Path(args.reference))
    if ref_protocol != setup.protocol or len(ref_feats) != len(orig):
        raise RuntimeError(
            f"{args.reference} was made with {ref_protocol} on {len(ref_feats)} images; this evaluation uses "
            f"{setup.protocol} on {len(orig)}: rerun `semtok eval-reference`"
        )
    rec_feats = extract_features(setup.extractor, rec, batch_size=cfg.evaluation.batch_size)[
        setup.feature_names["fid"]
    ]
    lpips_net = registry.load_lpips_metric(cfg).to(device)
    all_indices = torch.cat(indices)
    n = len(orig)
    values = {
        "rFID": frechet_distance(stats_from_features(rec_feats), stats_from_features(ref_feats)),
        "PSNR": psnr_uint8(orig, rec),
        "SSIM": ssim_uint8(orig, rec),
        "LPIPS": lpips_distance(lpips_net, orig, rec, batch_size=cfg.evaluation.batch_size),
        "bpp": tok.bits * tok.num_tokens / float(orig.shape[1] * orig.shape[2]),
        "codebook_usage": float(all_indices.unique().numel()) / min(all_indices.numel(), 2**tok.bits),
    }
    protocols = {
        "rFID": f"fid={setup.protocol} ref=val-images({n}) n={n}",
        "PSNR": "uint8-rgb-per-image-mean",
        "SSIM": "uint8-rgb-gaussian11-sigma1.5-per-image-mean",
        "LPIPS": registry.lpips_metric_protocol(cfg),
        "bpp": "bits*tokens/(H*W)",
        "codebook_usage": f"distinct-indices/min(tokens,2^d) over {n} images",
    }
    config_hash = section_hash(t, cfg.data, cfg.pretrained, cfg.evaluation.recon_images)
    write_metrics(
        Path(args.output),
        run_id=cfg.run_id,
        kind="recon",
        variant=args.variant,
        setting=args.mode,
        values=values,
        protocols=protocols,
        config_hash=config_hash,
        n_samples=n,
    )
    k = cfg.evaluation.grid_images
    save_npz(Path(args.examples), original=orig[:k], recon=rec[:k])
    if args.features:
        m = cfg.evaluation.tsne_images
        save_npz(Path(args.features), features=np.concatenate(pooled)[:m], labels=np.concatenate(labels)[:m])
    return {"variant": args.variant, "mode": args.mode, **values}


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return evaluate(cfg, args)
