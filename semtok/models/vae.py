"""The frozen VAE's interface (diffusers `AutoencoderKL`; SD3.5's at the paper scale), in one place for
the pre-encoding, the loader, the tokenizer and the evaluation (SPEC §1).

Latents are stored raw (the posterior mean, fp16) and normalised once, when they are read, as
`(z - shift) * scale` with the factors of the VAE's own config (SD3.5: shift 0.0609, scale 1.5305);
decoding undoes it. The VAE's downsampling factor is 2^(number of blocks - 1).

The VAE runs in float32 even inside a bf16 autocast region (semtok/models/precision.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from semtok.models.precision import float32


def normalisation(config: Any) -> tuple[float, float]:
    """(shift_factor, scaling_factor) of a VAE config (a dict or diffusers' FrozenDict)."""
    return float(config.get("shift_factor") or 0.0), float(config.get("scaling_factor") or 1.0)


def downsample_factor(config: Any) -> int:
    """f of a VAE config: an image of side H has latents of side H / f."""
    return 2 ** (len(config["block_out_channels"]) - 1)


def normalise(raw: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
    """Raw latents (B, C, h, w) → normalised latents, (raw - shift) * scale."""
    return (raw - shift) * scale


@torch.no_grad()
def encode_mean(vae: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """images: (B, 3, H, W) in [-1, 1] → raw VAE latent mean (B, C, H/f, W/f), in float32."""
    with float32(images.device):
        return vae.encode(images.to(vae.dtype)).latent_dist.mean


def decode(vae: nn.Module, latents: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
    """Normalised latents (B, C, h, w) → images (B, 3, H, W) in about [-1, 1] (differentiable), in float32."""
    with float32(latents.device):
        return vae.decode(latents.to(vae.dtype) / scale + shift).sample
