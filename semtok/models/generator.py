"""Masked autoregressive generator over SemTok's 1D binary tokens (SPEC §4).

A LlamaGen-style transformer (RMSNorm, SwiGLU, 1D RoPE, QK-RMSNorm) with bidirectional attention
(MAR-style masked prediction) or, for Table 5's raster variant, causal attention and next-token
prediction. The class token is prepended at position 0 and also conditions every block through
adaLN. **Decision** (SPEC): one adaLN projection cond -> SiLU -> Linear(w, 6w) shared by all blocks,
each block adding its own learned (6, w) offset (VAR's shared adaLN); the head's norm has its own
Linear(w, 2w) modulation (VAR's adaLN-before-head). With SwiGLU hidden ceil(8w/3) rounded up to a
multiple of 256 this gives L 318M, XL 746M and XXL 1.27B parameters (Table 9: 318M / 746M / 1.2B).

Each token enters as its ±1 bit vector through Linear(d, w); masked tokens are replaced by a
learned mask embedding. Heads:
- "bitwise": the Infinite-Vocabulary Classifier, d binary classifiers: logits (B, K, d, 2);
- "groups2" (Table 13): two classifiers over 2^(d/2) indices: logits (B, K, 2, 2^(d/2)).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from semtok.models.quantizer import BinarySphericalQuantizer
from semtok.models.rope import apply_rope, rope_1d
from semtok.models.saved import SavedModelMixin

HeadKind = Literal["bitwise", "groups2"]
MaskDistribution = Literal["uniform", "truncnorm"]


def swiglu_hidden(width: int, multiple_of: int = 256) -> int:
    """LlamaGen's SwiGLU width: ceil(8w/3) rounded up to a multiple of 256."""
    hidden = math.ceil(8 * width / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x: (B, N, w); shift, scale: (B, 1, w)."""
    return x * (1 + scale) + shift


class KVCache:
    """Keys and values of the positions decoded so far for one block: (B, H, N, head_dim)."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def extend(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new positions' k, v: (B, H, n, head_dim); return all cached k, v."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v


class FeedForward(nn.Module):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        hidden = swiglu_hidden(width)
        self.w1 = nn.Linear(width, hidden, bias=False)
        self.w3 = nn.Linear(width, hidden, bias=False)
        self.w2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Attention(nn.Module):
    """Multi-head self-attention with QK-RMSNorm and 1D RoPE, through SDPA."""

    def __init__(self, width: int, heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.heads = heads
        head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=eps) if qk_norm else nn.Identity()

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, causal: bool, cache: KVCache | None
    ) -> torch.Tensor:
        """x: (B, N, w); cos, sin: (N, head_dim) for x's positions. With a cache, x holds the new
        positions after the cached ones; they attend to all cached positions and to themselves.
        QK-norm and RoPE run in float32 (also under bf16 autocast)."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q = apply_rope(self.q_norm(q.float()), cos, sin).to(v.dtype)
        k = apply_rope(self.k_norm(k.float()), cos, sin).to(v.dtype)
        if cache is not None:
            if n != 1 and cache.length:
                raise ValueError("KV-cached decoding feeds one position at a time")
            k, v = cache.extend(k, v)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and n > 1)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    """Pre-norm attention + SwiGLU, both adaLN-modulated (shift, scale, gate)."""

    def __init__(self, width: int, heads: int, qk_norm: bool, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(width, eps=eps, elementwise_affine=False)
        self.attn = Attention(width, heads, qk_norm, eps)
        self.norm2 = nn.RMSNorm(width, eps=eps, elementwise_affine=False)
        self.mlp = FeedForward(width)
        self.ada_offset = nn.Parameter(torch.zeros(6, width))

    def forward(
        self,
        x: torch.Tensor,
        ada: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        causal: bool,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x: (B, N, w); ada: (B, 6, w) the shared modulation."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (ada + self.ada_offset).unsqueeze(2).unbind(1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), cos, sin, causal, cache)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class MaskedGenerator(SavedModelMixin, ModelMixin, ConfigMixin):
    """Class-conditional generator over K = num_tokens tokens of d = bits bits; depth x width with
    `heads` heads (Table 9's sizes are `generator.sizes` of the config); num_classes real classes, the
    null class (CFG) is num_classes; head "bitwise" or "groups2"; class_dropout in training. Built from
    the experiment config by `semtok.models.factory.build_generator`.

    Bidirectional (default): `forward(bits, mask, labels)` predicts every token from the unmasked
    ones; sequence [class, token_0..token_{K-1}] at positions 0..K.
    Causal (`causal=True`, Table 5 raster): `forward(bits, None, labels)` is teacher-forced next-token
    prediction; sequence [class, token_0..token_{K-2}] at positions 0..K-1, the output at position i
    predicts token i. `forward_step` decodes one position at a time with a KV cache.

    Saved with the model for the generation pipeline (semtok/sampling/pipeline.py), not used by it:
    sample_settings, the sampler arguments it was trained to be sampled with (`generator.sample` of its
    variant: steps, order, top_p, cfg_scale, cfg_schedule, temperature, choice_temperature), and
    class_names, the name of each class of its dataset. None in folders written before they existed.
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        *,
        depth: int,
        width: int,
        heads: int,
        num_tokens: int,
        bits: int,
        num_classes: int,
        head: HeadKind,
        causal: bool,
        class_dropout: float,
        grad_checkpointing: bool,
        qk_norm: bool = True,
        rope_theta: float = 10000.0,
        norm_eps: float = 1e-6,
        sample_settings: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"MaskedGenerator: {len(class_names)} class_names for {num_classes} classes")
        if head not in ("bitwise", "groups2"):
            raise ValueError(f"MaskedGenerator head must be 'bitwise' or 'groups2', got {head!r}")
        if head == "groups2" and bits % 2:
            raise ValueError(f"MaskedGenerator head='groups2' needs an even number of bits, got {bits}")
        if width % heads or (width // heads) % 2:
            raise ValueError(f"MaskedGenerator: width {width} / heads {heads} must be an even integer")
        self.null_class = num_classes
        self.class_embed = nn.Embedding(num_classes + 1, width)
        self.token_embed = nn.Linear(bits, width)
        self.mask_embed = None if causal else nn.Parameter(torch.zeros(width))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.blocks = nn.ModuleList(Block(width, heads, qk_norm, norm_eps) for _ in range(depth))
        self.head_norm = nn.RMSNorm(width, eps=norm_eps, elementwise_affine=False)
        self.head_adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        outputs = 2 * bits if head == "bitwise" else 2 * 2 ** (bits // 2)
        self.head_proj = nn.Linear(width, outputs)
        self.gradient_checkpointing = False
        self.reset_parameters()
        if grad_checkpointing:
            self.enable_gradient_checkpointing()

    def reset_parameters(self) -> None:
        """LlamaGen's N(0, 0.02) for linear and embedding weights; adaLN projections start at zero
        (DiT), the per-block offsets at N(0, 1/w) (VAR), so the class enters through training."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for projection in (self.adaln[1], self.head_adaln[1]):
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
        for block in self.blocks:
            nn.init.normal_(block.ada_offset, std=self.config.width**-0.5)
        if self.mask_embed is not None:
            nn.init.normal_(self.mask_embed, std=0.02)

    def drop_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Class dropout for CFG: in training, each label becomes the null class with probability
        class_dropout (torch's global RNG). labels: (B,) int64."""
        if not self.training or self.config.class_dropout <= 0:
            return labels
        drop = torch.rand(labels.shape, device=labels.device) < self.config.class_dropout
        return torch.where(drop, torch.full_like(labels, self.null_class), labels)

    def embed_tokens(self, bits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """bits: (B, N, d) bool or 0/1; mask: (B, N) bool, True = masked, or None -> (B, N, w)."""
        x = self.token_embed(bits.to(self.token_embed.weight.dtype) * 2 - 1)
        if mask is None:
            return x
        return torch.where(mask[..., None], self.mask_embed.to(x.dtype), x)

    def _transformer(
        self, x: torch.Tensor, cond: torch.Tensor, start: int, caches: list[KVCache] | None = None
    ) -> torch.Tensor:
        """x: (B, N, w) at positions start..start+N-1; cond: (B, w) class embedding -> logits of
        every position (B, N, ...)."""
        ada = self.adaln(cond).view(cond.shape[0], 6, -1)
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        cos, sin = rope_1d(positions, self.config.width // self.config.heads, self.config.rope_theta)
        causal = self.config.causal
        for i, block in enumerate(self.blocks):
            if caches is not None:
                x = block(x, ada, cos, sin, causal, caches[i])
            elif torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, ada, cos, sin, causal)
            else:
                x = block(x, ada, cos, sin, causal)
        shift, scale = self.head_adaln(cond).unsqueeze(1).chunk(2, dim=-1)
        logits = self.head_proj(modulate(self.head_norm(x), shift, scale))
        d = self.config.bits
        if self.config.head == "bitwise":
            return logits.unflatten(-1, (d, 2))
        return logits.unflatten(-1, (2, 2 ** (d // 2)))

    def forward(self, bits: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        """bits: (B, K, d) bool or 0/1; mask: (B, K) bool, True = masked (None for the causal
        variant); labels: (B,) int64, num_classes = null class.
        Returns logits for the K tokens: (B, K, d, 2) bitwise or (B, K, 2, 2^(d/2)) groups2."""
        if self.config.causal != (mask is None):
            raise ValueError("the causal generator takes mask=None, the bidirectional one needs a mask")
        cond = self.class_embed(self.drop_labels(labels))
        if self.config.causal:
            bits = bits[:, :-1]
        x = torch.cat([cond[:, None], self.embed_tokens(bits, mask)], dim=1)
        logits = self._transformer(x, cond, start=0)
        return logits if self.config.causal else logits[:, 1:]

    def forward_step(
        self, prev_bits: torch.Tensor | None, labels: torch.Tensor, caches: list[KVCache]
    ) -> torch.Tensor:
        """One KV-cached raster step of the causal variant. At step i (i = caches' length) the input
        is the class token (i = 0, prev_bits None) or token i-1 (prev_bits: (B, d)); the output
        (B, 1, ...) is the prediction of token i."""
        if not self.config.causal:
            raise ValueError("forward_step is the causal variant's decoding step")
        cond = self.class_embed(labels)
        x = cond[:, None] if prev_bits is None else self.embed_tokens(prev_bits[:, None], None)
        return self._transformer(x, cond, start=caches[0].length, caches=caches)

    def new_kv_cache(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def loss(
        self,
        logits: torch.Tensor,
        target_bits: torch.Tensor,
        mask: torch.Tensor | None,
        label_smoothing: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy per bit (bitwise) or per group index (groups2), averaged per token, then
        over the masked tokens (all tokens when mask is None, the raster variant).

        logits: `forward`'s output; target_bits: (B, K, d); mask: (B, K) bool or None.
        Returns (loss, bit accuracy of the argmax prediction), both scalars; the accuracy is detached.
        """
        d = self.config.bits
        bitwise = self.config.head == "bitwise"
        target_bits = target_bits.bool()
        if bitwise:
            targets = target_bits.long()
        else:
            targets = BinarySphericalQuantizer.bits_to_indices(target_bits.unflatten(-1, (2, d // 2)))
        ce = F.cross_entropy(
            logits.flatten(0, -2).float(),
            targets.flatten(),
            reduction="none",
            label_smoothing=label_smoothing,
        )
        per_token = ce.view(targets.shape).flatten(2).mean(-1)
        predicted = logits.argmax(-1)
        if bitwise:
            predicted_bits = predicted.bool()
        else:
            predicted_bits = BinarySphericalQuantizer.indices_to_bits(predicted, d // 2).flatten(-2)
        accuracy = (predicted_bits == target_bits).float().mean(-1)
        weights = torch.ones_like(per_token) if mask is None else mask.float()
        total = weights.sum().clamp_min(1)
        return (per_token * weights).sum() / total, ((accuracy * weights).sum() / total).detach()


def sample_mask(
    batch: int,
    num_tokens: int,
    min_ratio: float,
    max_ratio: float,
    dist: MaskDistribution,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training masks (SPEC §4): per sample a ratio r in [min_ratio, max_ratio], then ceil(K r)
    random positions masked. dist "uniform": r ~ U[min, max] (the paper); "truncnorm": MAR's normal
    with mean 1.0 and std 0.25 truncated to [min, max] (sampled by inverse CDF).
    Returns (batch, K) bool, True = masked."""
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    if dist == "uniform":
        ratio = min_ratio + (max_ratio - min_ratio) * u
    elif dist == "truncnorm":
        mean, std = 1.0, 0.25
        lo, hi = (torch.tensor([min_ratio, max_ratio], dtype=torch.float64, device=device) - mean) / std
        lo_cdf, hi_cdf = torch.special.ndtr(lo), torch.special.ndtr(hi)
        ratio = mean + std * torch.special.ndtri(lo_cdf + (hi_cdf - lo_cdf) * u)
        ratio = ratio.clamp(min_ratio, max_ratio)
    else:
        raise ValueError(f"mask ratio distribution must be 'uniform' or 'truncnorm', got {dist!r}")
    num_masked = torch.ceil(num_tokens * ratio).long().clamp(0, num_tokens)
    ranks = torch.rand(batch, num_tokens, generator=generator, device=device).argsort(-1).argsort(-1)
    return ranks < num_masked[:, None]
