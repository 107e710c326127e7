"""Perceptual losses of Stage II (SPEC §2): L_per = LPIPS (VGG) + ResNet logit loss, each selectable
(Table 11).

LPIPS (Zhang et al. 2018, v0.1): VGG16 features at relu1_2 … relu5_3, unit-normalised over channels,
squared differences weighted by learned 1×1 "lin" layers, averaged over space, summed over layers.
The backbone is a torchvision `VGG` (ImageNet weights for the real thing; the same class at reduced
width for the offline default), the lin weights are the ones the `lpips` package ships. With the
real widths this module computes exactly what `lpips.LPIPS(net="vgg")` computes (tested).

ResNet logit loss (MaskBiT): MSE between the ImageNet-classifier logits of I and Î at the
classifier's resolution (224 for ResNet-50), ImageNet-normalised.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semtok.data.images import imagenet_normalise
from semtok.models.precision import float32

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_BLOCK_CONVS = (2, 2, 3, 3, 3)
# LPIPS input scaling (their ScalingLayer): inputs in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def vgg16_features(widths: tuple[int, ...] = VGG16_WIDTHS) -> nn.Sequential:
    """torchvision's VGG16 `features` layout (13 convs, 5 max-pools) at the given stage widths."""
    from torchvision.models.vgg import make_layers

    cfg: list[int | str] = []
    for width, convs in zip(widths, VGG16_BLOCK_CONVS, strict=True):
        cfg += [width] * convs + ["M"]
    return make_layers(cfg, batch_norm=False)


# Indices of the ReLUs whose outputs LPIPS taps (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
TAPS = (3, 8, 15, 22, 29)


class LPIPS(nn.Module):
    """LPIPS distance; forward(a, b) with images in [-1, 1], (B, 3, H, W) → (B,)."""

    def __init__(self, widths: list[int] | tuple[int, ...] = VGG16_WIDTHS) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.features = vgg16_features(self.widths)[: TAPS[-1] + 1]
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in self.widths)
        for lin, width in zip(self.lins, self.widths, strict=True):
            # LPIPS's lin weights are non-negative (a weighted distance); untrained ones weigh every
            # channel equally, the "baseline" of Zhang et al.
            nn.init.constant_(lin.weight, 1.0 / width)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def pretrained(cls, net: str = "vgg") -> LPIPS:
        """ImageNet VGG16 (torchvision, cached in TORCH_HOME) + the lpips package's v0.1 lin weights."""
        if net != "vgg":
            raise ValueError(f"the Stage II LPIPS loss is the VGG variant; got net={net!r}")
        import lpips
        import torchvision

        model = cls()
        vgg = torchvision.models.vgg16(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1)
        model.features.load_state_dict(vgg.features[: TAPS[-1] + 1].state_dict())
        lin_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        model.load_lins(torch.load(lin_file, map_location="cpu", weights_only=True))
        return model

    def load_lins(self, state: dict[str, torch.Tensor]) -> None:
        """Load lin weights in the lpips package's naming (`lin{i}.model.1.weight`)."""
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(state[f"lin{i}.model.1.weight"])

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in TAPS:
                out.append(h)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = a.new_zeros(a.shape[0])
        for lin, fa, fb in zip(self.lins, self._taps(a), self._taps(b), strict=True):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


def resnet_logit_loss(
    classifier: nn.Module, real: torch.Tensor, fake: torch.Tensor, size: int
) -> torch.Tensor:
    """MSE between classifier logits of real and reconstructed images (in [-1, 1]), at `size` px."""

    def prep(x: torch.Tensor) -> torch.Tensor:
        x = (x.clamp(-1, 1) + 1) / 2
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return imagenet_normalise(x)

    with torch.no_grad():
        target = classifier(prep(real))
    return F.mse_loss(classifier(prep(fake)), target)


class PerceptualLoss(nn.Module):
    """L_per = Σ of the selected terms ("lpips", "resnet"); frozen networks from the registry."""

    def __init__(
        self, terms: list[str], lpips: nn.Module | None, resnet: nn.Module | None, resnet_size: int
    ) -> None:
        super().__init__()
        unknown = set(terms) - {"lpips", "resnet"}
        if unknown or not terms:
            raise ValueError(f"perceptual terms must be a non-empty subset of lpips, resnet; got {terms}")
        self.terms = list(terms)
        self.lpips = lpips if "lpips" in terms else None
        self.resnet = resnet if "resnet" in terms else None
        self.resnet_size = resnet_size
        for net in (self.lpips, self.resnet):
            if net is not None:
                net.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> PerceptualLoss:  # frozen networks always stay in eval mode
        return self

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """In float32 like every convolutional network of the package (semtok/models/precision.py)."""
        out = {}
        with float32(real.device):
            real, fake = real.float(), fake.float()
            if self.lpips is not None:
                out["lpips"] = self.lpips(fake, real).mean()
            if self.resnet is not None:
                out["resnet"] = resnet_logit_loss(self.resnet, real, fake, self.resnet_size)
        return out
