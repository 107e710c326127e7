"""Why the refiner's latent error can rise while its pixel error falls (docs/DECISIONS.md).

    python benchmarks/refiner_latents.py --out results [--variant b18] [--images 200]

Needs a run that has trained Stage II of the variant and encoded the validation latents (e.g.
`snakemake --cores 2 results/tokenizer/b18/stage2 results/data/latents/val/val-00000.tar`).
Prints, on validation images:
- latent and pixel MSE of the untrained refiner (Stage I weights + fresh mask tokens) and of the
  trained one;
- the singular values of the frozen VAE decoder's Jacobian at one validation latent, and how much
  the decoded pixels move under random latent noise versus under a swap of two images' latents.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from semtok import config, paths
from semtok.eval.reference import val_batches
from semtok.models.tokenizer import SemTok
from semtok.train.tokenizer import refiner_errors, stage2_start


def decoder_sensitivity(model: SemTok, latents: torch.Tensor, noise_std: float = 0.5) -> dict[str, float]:
    z = latents[:1]
    jac = torch.autograd.functional.jacobian(
        lambda x: model.latents_to_pixels(x.view_as(z)).flatten(), z.flatten()
    )
    sv = torch.linalg.svdvals(jac)
    with torch.no_grad():
        base = model.latents_to_pixels(latents)
        noisy = model.latents_to_pixels(latents + noise_std * torch.randn_like(latents))
        swapped = model.latents_to_pixels(latents.roll(1, 0))
    return {
        "sv_max": sv.max().item(),
        "sv_median": sv.median().item(),
        "sv_min": sv.min().item(),
        "pixel_mse_under_noise": F.mse_loss(noisy, base).item(),
        "pixel_mse_under_swap": F.mse_loss(swapped, base).item(),
        "latent_mse_of_swap": F.mse_loss(latents.roll(1, 0), latents).item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--out", required=True, help="the run's out_dir")
    parser.add_argument("--variant", default="b18")
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    cfg = config.load(args.config, [f"out_dir={args.out}"])
    batch = next(val_batches(cfg, args.images, features=("latents",)))
    torch.manual_seed(cfg.seed)
    before = refiner_errors(stage2_start(cfg, args.variant), batch)
    trained = SemTok.from_pretrained(paths.tokenizer_dir(Path(args.out), args.variant, "stage2"))
    after = refiner_errors(trained, batch)
    print(
        f"refiner latent MSE {before[0]:.3f} -> {after[0]:.3f}, pixel MSE {before[1]:.3f} -> {after[1]:.3f}"
    )
    torch.manual_seed(cfg.seed)
    sens = decoder_sensitivity(trained, batch["latent"])
    print(
        f"VAE decoder Jacobian singular values: max {sens['sv_max']:.4f}, median {sens['sv_median']:.4f}, "
        f"min {sens['sv_min']:.5f}"
    )
    print(
        f"pixel MSE under latent noise (std 0.5) {sens['pixel_mse_under_noise']:.4f}; under a swap of two "
        f"images' latents (latent MSE {sens['latent_mse_of_swap']:.3f}) {sens['pixel_mse_under_swap']:.4f}"
    )


if __name__ == "__main__":
    main()
