"""Adversarial terms of Stage II (SPEC §2): hinge loss and LeCam regularisation (weight 0.001),
switched on after `gan.start` steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semtok.models.discriminator import Discriminator

LECAM_DECAY = 0.99


def generator_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def discriminator_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def lecam(disc: Discriminator, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """LeCam regulariser: pull D(real) towards the running mean of D(fake) and vice versa; updates
    the running means (buffers of `disc`, so they are checkpointed with it)."""
    real_mean, fake_mean = real_logits.detach().mean(), fake_logits.detach().mean()
    disc.ema_real.lerp_(real_mean, 1.0 - LECAM_DECAY)
    disc.ema_fake.lerp_(fake_mean, 1.0 - LECAM_DECAY)
    return (F.relu(real_logits - disc.ema_fake) ** 2).mean() + (
        F.relu(disc.ema_real - fake_logits) ** 2
    ).mean()


def gan_active(step: int, start: int) -> bool:
    """The discriminator and the adversarial term are off before `start` and on from it."""
    return step >= start
