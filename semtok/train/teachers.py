"""Tiny frozen teachers bootstrapped on the configured data (the `teachers` job, semtok/jobs/teachers.py).

The offline default cannot download SD3.5's VAE, SigLIP, ResNet-50 or Inception. So that its
numbers mean something rather than noise, it trains tiny models *of the same classes* briefly on the
synthetic data, saves them like the real weights, and every later stage loads them through the
registry exactly as it would load the real ones (semtok/registry.py):

- vae:       diffusers AutoencoderKL, trained as an autoencoder (MSE + a small KL) that decodes the
             posterior mean, as every later stage uses it (a sampled latent only slows a bootstrap
             of a few hundred steps: 22.3 vs 20.0 dB after 250 steps); its
             shift/scaling factors are then set from the latent statistics, as SD3 did.
- siglip:    transformers SiglipVisionModel, trained as a class feature extractor (linear probe on
             the mean-pooled patch features, cross-entropy); the head is dropped.
- resnet:    torchvision ResNet classifier (the ResNet-50 logit loss of Stage II).
- inception: a second, independently seeded torchvision ResNet classifier, the stand-in FID/IS
             feature extractor — never the network Stage II optimises against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semtok import registry
from semtok.config import ComponentConfig, Config, OptimConfig
from semtok.data.imagenet import num_classes
from semtok.data.images import imagenet_normalise

KL_WEIGHT = 1e-6
LABEL_SMOOTHING = 0.1


class SiglipProbe(nn.Module):
    """SigLIP tower + linear class probe on its mean-pooled patch features (training only)."""

    def __init__(self, tower: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.tower = tower
        self.head = nn.Linear(tower.config.hidden_size, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.tower(pixel_values=registry.siglip_preprocess(images, self.tower)).last_hidden_state
        return self.head(feats.mean(dim=1))


def build_teacher(cfg: Config, name: str) -> tuple[nn.Module, Any]:
    comp = registry.component(cfg, name)
    if name == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL(**registry.tiny_vae_arch(comp.arch, cfg.data.resolution)), None
    if name == "siglip":
        from transformers import SiglipVisionModel

        tower = SiglipVisionModel(registry.tiny_siglip_config(comp.arch))
        return SiglipProbe(tower, num_classes(cfg)), None
    from semtok.eval.features import ClassifierConfig, build_classifier

    arch = dict(comp.arch)
    arch.setdefault("num_classes", num_classes(cfg))
    arch.setdefault("image_size", cfg.data.resolution)
    arch["layers"] = tuple(arch["layers"])
    config = ClassifierConfig(**arch)
    return build_classifier(config), config


def teacher_loss(
    name: str, model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    images = batch["image"]  # (B, 3, H, W) in [-1, 1]
    if name == "vae":
        posterior = model.encode(images).latent_dist
        recon = model.decode(posterior.mode()).sample
        mse = F.mse_loss(recon, images)
        kl = posterior.kl().mean() / images[0].numel()
        return mse + KL_WEIGHT * kl, {"mse": mse.detach(), "kl": kl.detach()}
    x = (images + 1) / 2
    if name != "siglip":
        x = imagenet_normalise(x)
    logits = model(x)
    # Label smoothing keeps the logits' scale moderate: the ResNet logit loss of Stage II is an MSE
    # between logits, which an over-confident classifier would blow up.
    loss = F.cross_entropy(logits, batch["cls"], label_smoothing=LABEL_SMOOTHING)
    acc = (logits.argmax(-1) == batch["cls"]).float().mean()
    return loss, {"accuracy": acc.detach()}


@torch.no_grad()
def latent_statistics(vae: nn.Module, batches: list[torch.Tensor]) -> tuple[float, float]:
    """(shift, scaling) so that (z - shift) * scaling has zero mean and unit variance."""
    z = torch.cat([vae.encode(b).latent_dist.mean.flatten() for b in batches])
    return float(z.mean()), float(1.0 / z.std().clamp_min(1e-6))


def teacher_seed(cfg: Config, name: str) -> int:
    """Each teacher's own seed, so that the two ResNet classifiers start differently."""
    return cfg.seed + registry.BOOTSTRAPPABLE.index(name) * 7919


def teacher_optim(comp: ComponentConfig) -> OptimConfig:
    """The training settings of a bootstrapped component: its steps, batch and lr; no weight decay and
    no EMA, a 5 % warmup, a checkpoint halfway."""
    return OptimConfig(
        steps=comp.train_steps,
        batch_size=comp.batch_size,
        lr=comp.lr,
        weight_decay=0.0,
        warmup=max(1, comp.train_steps // 20),
        ema=0.0,
        ckpt_every=max(1, comp.train_steps // 2),
        keep_ckpts=1,
        log_every=max(1, comp.train_steps // 10),
    )


def save_teacher(name: str, module: nn.Module, classifier_config: Any, path: Path, summary: dict) -> None:
    """Save a trained teacher the way the registry loads the real component (and `teacher.json`, the
    training summary): the VAE and the SigLIP tower with `save_pretrained`, classifiers with
    `save_classifier`."""
    if name == "vae":
        module.save_pretrained(path)
    elif name == "siglip":
        module.tower.save_pretrained(path)
    else:
        from semtok.eval.features import save_classifier

        save_classifier(module, classifier_config, path)
    (path / "teacher.json").write_text(json.dumps(summary, indent=1))
