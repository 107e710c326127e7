"""Semantic alignment of the encoder with SigLIP features: L_sem = L_contra + L_distill.

SPEC §2 "Semantic alignment" (paper Eq. 2).
- Distillation on stream A: L_distill = mean ||x_sig - w_x(x)||^2, with the SigLIP patch grid
  resampled bilinearly to the image-token grid (h, w).
- Contrastive on stream B: u = P(x_sig) / ||P(x_sig)|| (P = mean over patches),
  v = mean_k w_z(Q(z)_k) / ||.||, computed from the quantized codes. Symmetric InfoNCE (CLIP) over the
  global batch with a learnable temperature t (init 1/0.07, clamped at 100). The paper writes the
  log-softmax without a minus; the loss is its negative.
  **Decision**: w_z is a per-token 2-layer MLP (d -> embed_dim -> C_sig) applied before the token mean;
  a linear w_z would make v a linear function of the mean code (rank <= d).

SigLIP features arrive as (B, Ns, C) sequences (no CLS token, Ns a square) or (B, C, Hs, Ws) grids.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from semtok.models.precision import float32


def siglip_grid(sig: torch.Tensor) -> torch.Tensor:
    """sig: (B, Ns, C) with Ns a square, or (B, C, Hs, Ws) -> (B, C, Hs, Ws)."""
    if sig.ndim == 4:
        return sig
    if sig.ndim != 3:
        raise ValueError(
            f"SigLIP features must be (B, Ns, C) or (B, C, Hs, Ws), got shape {tuple(sig.shape)}"
        )
    b, n, c = sig.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"SigLIP sequence length {n} is not a square (a CLS token must be removed first)")
    return sig.transpose(1, 2).reshape(b, c, side, side)


def resample_to_grid(sig: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinear resample of the SigLIP patch grid to the token grid.

    sig: (B, Ns, C) or (B, C, Hs, Ws); grid: (h, w) -> (B, h*w, C), row-major like the image tokens.
    """
    x = siglip_grid(sig)
    if tuple(x.shape[-2:]) != tuple(grid):
        x = F.interpolate(x.float(), size=grid, mode="bilinear", align_corners=False)
    return x.flatten(2).transpose(1, 2)


class DistillationHead(nn.Module):
    """w_x: width -> C_sig, linear or a 2-layer MLP (hidden = width, GELU)."""

    def __init__(self, width: int, sig_dim: int, kind: Literal["linear", "mlp"]) -> None:
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(width, sig_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, sig_dim))
        else:
            raise ValueError(f"DistillationHead kind must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, width) -> (B, N, C_sig)."""
        return self.net(x)


def distillation_loss(
    head: DistillationHead, x: torch.Tensor, grid: tuple[int, int], sig: torch.Tensor
) -> torch.Tensor:
    """L_distill. x: (B, h*w, width) stream-A features; sig: (B, Ns, C) or (B, C, Hs, Ws)."""
    target = resample_to_grid(sig, grid)
    return F.mse_loss(head(x).float(), target.float())


class ContrastiveHead(nn.Module):
    """v = normalise(mean over tokens of w_z(codes)), w_z: code_dim -> embed_dim -> sig_dim."""

    def __init__(self, code_dim: int, sig_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(code_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, sig_dim))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, K, d) quantized tokens -> v: (B, C_sig), unit norm."""
        return F.normalize(self.net(codes).float().mean(1), dim=-1)


def pooled_siglip(sig: torch.Tensor) -> torch.Tensor:
    """u = normalise(mean-pool of the patches). sig: (B, Ns, C) or (B, C, Hs, Ws) -> (B, C)."""
    return F.normalize(siglip_grid(sig).float().mean((-2, -1)), dim=-1)


class _GatherRows(torch.autograd.Function):
    """All ranks' rows in rank order. Every rank's loss reads every row, so the gradient of this rank's
    rows is the sum over ranks of the gradient at those rows (an all-reduce, then this rank's slice).
    Synchronous collectives of the public API, which gloo and NCCL both have (torch's private
    functional collectives are asynchronous in eager mode and change between releases)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        start = dist.get_rank() * ctx.rows
        return total[start : start + ctx.rows]


def _gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """x: (B, C) -> ((world*B, C) all ranks' rows in rank order, rank). Gradients reach every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    return _GatherRows.apply(x), dist.get_rank()


class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE between v (tokens) and u (SigLIP) over the global batch, learnable t."""

    def __init__(self, init_temperature: float, max_scale: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_scale = max_scale

    def forward(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """v, u: (B, C) unit vectors of the local batch; row i of v matches row i of u."""
        v_all, rank = _gather_with_grad(v)
        u_all, _ = _gather_with_grad(u)
        labels = torch.arange(v.shape[0], device=v.device) + rank * v.shape[0]
        with float32(v.device):
            scale = self.logit_scale.exp().clamp(max=self.max_scale)
            loss_v = F.cross_entropy(scale * v.float() @ u_all.float().T, labels)
            loss_u = F.cross_entropy(scale * u.float() @ v_all.float().T, labels)
        return (loss_v + loss_u) / 2


class SemanticAlignment(nn.Module):
    """Both parts of L_sem, each switchable (Table 4); a disabled part has no parameters."""

    def __init__(
        self,
        width: int,
        code_dim: int,
        sig_dim: int,
        contrastive: bool,
        distill: bool,
        distill_head: Literal["linear", "mlp"],
        contrastive_embed_dim: int,
        init_temperature: float,
        max_scale: float,
    ) -> None:
        """contrastive_embed_dim: hidden width of w_z; init_temperature, max_scale: the learnable CLIP
        temperature's start (1/0.07 as logit scale) and clamp (SPEC §2; `tokenizer.semantic`)."""
        super().__init__()
        self.distill_head = DistillationHead(width, sig_dim, distill_head) if distill else None
        self.contrastive_head = (
            ContrastiveHead(code_dim, sig_dim, contrastive_embed_dim) if contrastive else None
        )
        self.contrastive_loss = ContrastiveLoss(init_temperature, max_scale) if contrastive else None

    def forward(
        self, x: torch.Tensor, grid: tuple[int, int], codes: torch.Tensor, sig: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """x: (B, h*w, width) stream A; codes: (B, K, d) quantized tokens; sig: SigLIP features.

        Returns {"distill": scalar, "contra": scalar}; disabled parts are zero.
        """
        zero = x.new_zeros((), dtype=torch.float32)
        losses = {"distill": zero, "contra": zero}
        if self.distill_head is not None:
            losses["distill"] = distillation_loss(self.distill_head, x, grid, sig)
        if self.contrastive_head is not None:
            losses["contra"] = self.contrastive_loss(self.contrastive_head(codes), pooled_siglip(sig))
        return losses
