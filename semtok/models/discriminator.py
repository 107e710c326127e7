"""MaskBiT-style image discriminator for Stage II (SPEC §2): convolutions, blur downsampling,
GroupNorm and LeakyReLU(0.1), residual blocks, patch logits. It also keeps the running means of its
outputs that the LeCam regulariser needs (Tseng et al. 2021), as buffers saved with its weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from semtok.models.precision import float32


class BlurDownsample(nn.Module):
    """Anti-aliased ×2 downsampling: separable [1, 3, 3, 1] blur, then stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum()).expand(channels, 1, 4, 4).contiguous(), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 2, 1, 2), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.channels)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class ResBlockDown(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            _norm(cout),
            nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, padding=1),
            _norm(cout),
            nn.LeakyReLU(0.1),
            BlurDownsample(cout),
        )
        self.skip = nn.Sequential(BlurDownsample(cin), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.body(x) + self.skip(x)) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """images (B, 3, H, W) in [-1, 1] → patch logits (B, 1, H / 2^n, W / 2^n)."""

    def __init__(self, channels: int, channel_mults: list[int] | tuple[int, ...]) -> None:
        """channels: width of the first level, times `channel_mults` per level (`tokenizer.stage2.gan`)."""
        super().__init__()
        widths = [channels * m for m in channel_mults]
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.blocks = nn.Sequential(
            *(ResBlockDown(a, b) for a, b in zip([widths[0], *widths[:-1]], widths, strict=True))
        )
        self.head = nn.Sequential(
            nn.Conv2d(widths[-1], widths[-1], 3, padding=1),
            _norm(widths[-1]),
            nn.LeakyReLU(0.1),
            nn.Conv2d(widths[-1], 1, 1),
        )
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """In float32 like every convolutional network of the package (semtok/models/precision.py)."""
        with float32(x.device):
            return self.head(self.blocks(self.stem(x.float())))
