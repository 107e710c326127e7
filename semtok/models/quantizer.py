"""Binary quantizers: BSQ (SemTok's Q) and LFQ (Table 10 ablation), with the entropy loss.

SPEC §2 "Quantizer Q". BSQ (Zhao et al. 2024): u = z / ||z||_2, Q(z) = sign(u) / sqrt(d), trained
with the straight-through estimator applied to the sign before the scaling, as bsq-vit does:
Q = a (u + sg(sign(u) - u)) with a = 1/sqrt(d), so dQ/du = a I (the gradient that reaches the encoder
through the codes is 1/sqrt(d) of the decoder's; LFQ's a = 1 leaves it whole). The bits are the code:
index k = sum_i 1[u_i > 0] 2^i (little endian, i = 0..d-1); no codebook tensor exists.

Entropy loss L_quant = E[H(q(z))] - H(E[q(z)]) with soft quantization factorised over groups of g
bits: p(c | x_g) = softmax over the 2^g corners c = s * a, s in {-1, +1}^g, of (2/tau) <x_g, c>,
where a is the corner magnitude (1/sqrt(d) for BSQ, 1 for LFQ). For g = 1 this is
p_i = sigmoid(4 a x_i / tau). The per-sample entropy of the factorised distribution equals the full
2^d softmax entropy exactly (the logits are a sum over groups); the codebook entropy sums
per-group entropies and is an upper bound of the full one, exact when g = d.

LFQ (Yu et al. 2023): codes sign(z) in {-1, +1}^d without the L2 projection; **Decision**: the same
entropy loss evaluated on z itself with corners +-1 (p_i = sigmoid(4 z_i / tau) for g = 1), plus
the commitment loss commit_weight * mean((z - sg(Q(z)))^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from semtok.config import MAX_BITS
from semtok.models.precision import float32

_EPS = 1e-8


@dataclass
class QuantizerOutput:
    """codes: (B, K, d) quantized tokens carrying the STE gradient (corner · identity); bits: (B, K, d) bool;
    indices: (B, K) int64; losses are scalar tensors (entropy_loss unweighted, commit_loss already
    times the quantizer's commit_weight); metrics hold detached scalar tensors."""

    codes: torch.Tensor
    bits: torch.Tensor
    indices: torch.Tensor
    per_sample_entropy: torch.Tensor
    codebook_entropy: torch.Tensor
    entropy_loss: torch.Tensor
    commit_loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over dim 0, averaged across processes when torch.distributed is initialised.

    x: (N, ...) -> (...). The value is the global mean; the gradient flows to the local part only.
    """
    local = x.mean(dim=0)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return local + (total / dist.get_world_size() - local.detach())


def _entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats of distributions along `dim`, safe at p = 0."""
    return -(p * p.clamp_min(_EPS).log()).sum(dim)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of Bernoulli(p), elementwise."""
    return _entropy(torch.stack([p, 1 - p], dim=-1))


def _corner_signs(g: int, device: torch.device) -> torch.Tensor:
    """All 2^g sign vectors, (2^g, g) in {-1, +1}, row c holds the bits of c (little endian)."""
    return QuantizerBase.indices_to_bits(torch.arange(2**g, device=device), g).float() * 2 - 1


def factorized_entropy(
    x: torch.Tensor, corner: float, tau: float, group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample and codebook entropy (nats) of the group-factorised soft quantization.

    x: (N, d) the quantizer input (u for BSQ, z for LFQ); corner: magnitude a of the code entries.
    Returns (per_sample, codebook): scalars. The codebook mean runs over the global batch.
    """
    n, d = x.shape
    if d % group_size:
        raise ValueError(f"code dimension {d} is not divisible by group size {group_size}")
    if group_size == 1:
        logits = 4 * corner / tau * x
        p = torch.sigmoid(logits)
        per_sample = (p * F.softplus(-logits) + (1 - p) * F.softplus(logits)).sum(-1).mean()
        return per_sample, _binary_entropy(global_mean(p)).sum()
    signs = _corner_signs(group_size, x.device)
    logits = 2 * corner / tau * x.reshape(n, d // group_size, group_size) @ signs.T
    log_p = logits.log_softmax(-1)
    p = log_p.exp()
    per_sample = -(p * log_p).sum((-2, -1)).mean()
    return per_sample, _entropy(global_mean(p)).sum()


def brute_force_entropy(u: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference BSQ entropies from a softmax over all 2^d corners {+-1/sqrt(d)}^d (small d only).

    u: (N, d) unit vectors. Returns (per_sample, codebook) in nats, single process.
    """
    d = u.shape[-1]
    corners = _corner_signs(d, u.device) / math.sqrt(d)
    p = (2 / tau * u @ corners.T).softmax(-1)
    return _entropy(p).mean(), _entropy(p.mean(0))


class QuantizerBase(nn.Module):
    """Binary quantizer with corners {+-corner}^d; subclasses choose the projection and the losses."""

    def __init__(self, dim: int, corner: float, tau: float, group_size: int) -> None:
        super().__init__()
        if dim > MAX_BITS:
            raise ValueError(f"at most {MAX_BITS} bits fit an int64 index, got {dim}")
        if dim % group_size:
            raise ValueError(f"code dimension {dim} is not divisible by group size {group_size}")
        self.dim, self.corner, self.tau, self.group_size = dim, corner, tau, group_size

    @staticmethod
    def bits_to_indices(bits: torch.Tensor) -> torch.Tensor:
        """bits: (..., d) bool -> (...) int64, k = sum_i bit_i 2^i. Exact for d <= 62."""
        d = bits.shape[-1]
        if d > MAX_BITS:
            raise ValueError(f"at most {MAX_BITS} bits fit an int64 index, got {d}")
        weights = torch.ones((), dtype=torch.int64, device=bits.device) << torch.arange(d, device=bits.device)
        return (bits.long() * weights).sum(-1)

    @staticmethod
    def indices_to_bits(indices: torch.Tensor, dim: int) -> torch.Tensor:
        """indices: (...) int64 -> (..., dim) bool."""
        if dim > MAX_BITS:
            raise ValueError(f"at most {MAX_BITS} bits fit an int64 index, got {dim}")
        shifts = torch.arange(dim, device=indices.device)
        return (indices.long()[..., None] >> shifts) & 1 == 1

    @staticmethod
    def bits_to_codes(bits: torch.Tensor, corner: float) -> torch.Tensor:
        """bits: (..., d) bool -> (..., d) float in {-corner, +corner}."""
        return (bits.float() * 2 - 1) * corner

    def codes_from_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: (...) int64 -> (..., d) codes of this quantizer (what the decoder consumes)."""
        return self.bits_to_codes(self.indices_to_bits(indices, self.dim), self.corner)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The continuous point that is quantized; identity unless overridden."""
        return z

    def commitment(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: (B, K, d) -> QuantizerOutput. Runs in float32 (autocast off)."""
        with float32(z.device):
            x = self.project(z.float())
            bits = x > 0
            signs = bits.float() * 2 - 1
            codes = self.corner * (x + (signs - x).detach())  # straight through the sign, then scaled
            per_sample, codebook = factorized_entropy(
                x.flatten(0, -2), self.corner, self.tau, self.group_size
            )
            indices = self.bits_to_indices(bits)
            metrics = self._metrics(bits, indices, per_sample, codebook)
            return QuantizerOutput(
                codes=codes,
                bits=bits,
                indices=indices,
                per_sample_entropy=per_sample,
                codebook_entropy=codebook,
                entropy_loss=per_sample - codebook,
                commit_loss=self.commitment(x, self.corner * signs),
                metrics=metrics,
            )

    def _metrics(
        self, bits: torch.Tensor, indices: torch.Tensor, per_sample: torch.Tensor, codebook: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Batch-local usage statistics without host synchronisation (no torch.unique)."""
        flat = indices.flatten().sort().values
        distinct = 1 + (flat[1:] != flat[:-1]).sum()
        frequency = bits.flatten(0, -2).float().mean(0)
        return {
            "codebook_usage": distinct / min(flat.numel(), 2**self.dim),
            "bit_entropy": (_binary_entropy(frequency) / math.log(2)).mean(),
            "per_sample_entropy": per_sample.detach(),
            "codebook_entropy": codebook.detach(),
        }


class BinarySphericalQuantizer(QuantizerBase):
    """BSQ: codes sign(u)/sqrt(d) on the unit sphere, u = z / ||z||_2."""

    def __init__(self, dim: int, group_size: int, tau: float) -> None:
        super().__init__(dim, corner=1 / math.sqrt(dim), tau=tau, group_size=group_size)

    @staticmethod
    def indices_to_codes(indices: torch.Tensor, dim: int) -> torch.Tensor:
        """indices: (...) int64 -> (..., dim) float BSQ codes +-1/sqrt(dim)."""
        return QuantizerBase.bits_to_codes(QuantizerBase.indices_to_bits(indices, dim), 1 / math.sqrt(dim))

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1)


class LookupFreeQuantizer(QuantizerBase):
    """LFQ: codes sign(z) in {-1, +1}^d, plus a commitment loss."""

    def __init__(self, dim: int, commit_weight: float, tau: float, group_size: int) -> None:
        super().__init__(dim, corner=1.0, tau=tau, group_size=group_size)
        self.commit_weight = commit_weight

    def commitment(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """commit_weight * mean((z - sg(codes))^2); codes: (B, K, d) hard codes."""
        return self.commit_weight * F.mse_loss(x, codes.detach())


def build_quantizer(kind: Literal["bsq", "lfq"], dim: int, **kwargs) -> QuantizerBase:
    """kind "bsq" (SemTok) or "lfq" (Table 10) with its kwargs (`tokenizer.entropy` of the config:
    group_size, tau; commit_weight for LFQ; semtok.models.factory.quantizer_kwargs)."""
    quantizers = {"bsq": BinarySphericalQuantizer, "lfq": LookupFreeQuantizer}
    if kind not in quantizers:
        raise ValueError(f"unknown quantizer kind {kind!r}, expected one of {sorted(quantizers)}")
    return quantizers[kind](dim, **kwargs)
