"""SemTok encoder E: an MMDiT dual-stream transformer that turns VAE latents into K 1D tokens.

SPEC §2 "Encoder E". Stream A carries the 2x2-patchified VAE latents, stream B K learnable
embeddings z_m. Every block is an SD3 "joint" block with separate weights per stream and one
attention over the concatenation [A; B]. **Decision** (SPEC): plain pre-LayerNorm blocks, no adaLN
(the encoder has no timestep); 8 blocks x 2 streams x 12 w^2 reproduces Table 8's 113M.
Positions: axial 2D RoPE on stream A, 1D RoPE on stream B, QK-RMSNorm per head and per stream.

Variants: `causal_1d` (Table 5 "raster") and `mode="grid2d"` (Table 3's 2D baseline: no stream B,
the N image tokens are quantized directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from semtok.models.rope import apply_rope, rope_1d, rope_2d

RopeTable = tuple[torch.Tensor, torch.Tensor]


@dataclass
class EncoderConfig:
    """The encoder's hyperparameters. Those of the experiment config (`tokenizer.encoder`, the token
    shape, the VAE's latent grid) have no defaults: `semtok.models.factory.encoder_kwargs` fills them."""

    depth: int
    width: int
    heads: int
    in_channels: int
    patch_size: int
    latent_size: int
    num_tokens: int
    token_dim: int
    mlp_ratio: float
    causal_1d: bool
    mode: Literal["1d", "grid2d"]
    grad_checkpointing: bool
    qk_norm: bool = True
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.mode not in ("1d", "grid2d"):
            raise ValueError(f"EncoderConfig.mode must be '1d' or 'grid2d', got {self.mode!r}")
        if self.causal_1d and self.mode != "1d":
            raise ValueError("EncoderConfig.causal_1d needs mode='1d' (there are no 1D tokens in grid2d)")
        if self.width % self.heads:
            raise ValueError(f"EncoderConfig.width {self.width} is not divisible by heads {self.heads}")
        if (self.width // self.heads) % 4:
            raise ValueError("EncoderConfig: head dimension width/heads must be divisible by 4 (2D RoPE)")
        if self.latent_size % self.patch_size:
            raise ValueError(
                f"EncoderConfig.latent_size {self.latent_size} not divisible by patch_size {self.patch_size}"
            )


@dataclass
class EncoderOutput:
    """x: (B, N, width) stream-A features; z: (B, K, d) continuous tokens before quantization;
    features: (B, K, width) hidden states right before the projection to d (t-SNE of Fig. 6)."""

    x: torch.Tensor
    z: torch.Tensor
    features: torch.Tensor


class MLP(nn.Module):
    def __init__(self, width: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class StreamAttention(nn.Module):
    """One stream's share of a joint attention: its own qkv, QK-norm and output projection."""

    def __init__(self, width: int, heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.heads = heads
        head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()

    def qkv_heads(self, x: torch.Tensor, rope: RopeTable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, L, width) -> q, k, v: (B, heads, L, head_dim), RoPE applied to q and k.

        QK-norm and RoPE run in float32 (also under bf16 autocast); q, k are returned in v's dtype.
        """
        b, length, _ = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q = apply_rope(self.q_norm(q.float()), *rope).to(v.dtype)
        k = apply_rope(self.k_norm(k.float()), *rope).to(v.dtype)
        return q, k, v


class Stream(nn.Module):
    """Pre-LN attention + MLP weights of one stream inside a joint block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, qk_norm: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = StreamAttention(width, heads, qk_norm)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = MLP(width, mlp_ratio)


class JointBlock(nn.Module):
    """SD3 joint block without adaLN: per-stream weights, one SDPA over the concatenated streams.

    Built with `num_streams=1` it is a plain pre-LN transformer block (grid2d mode).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, qk_norm: bool, num_streams: int) -> None:
        super().__init__()
        self.streams = nn.ModuleList(Stream(width, heads, mlp_ratio, qk_norm) for _ in range(num_streams))

    def forward(
        self, xs: list[torch.Tensor], ropes: list[RopeTable], mask: torch.Tensor | None
    ) -> list[torch.Tensor]:
        """xs: per stream (B, L_s, width); ropes: per stream (L_s, head_dim) tables;
        mask: (sum L_s, sum L_s) bool, True = may attend, or None."""
        qkv = [s.attn.qkv_heads(s.norm1(x), rope) for s, x, rope in zip(self.streams, xs, ropes, strict=True)]
        q, k, v = (torch.cat(parts, dim=2) for parts in zip(*qkv, strict=True))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).flatten(2).split([x.shape[1] for x in xs], dim=1)
        xs = [x + s.attn.proj(o) for s, x, o in zip(self.streams, xs, out, strict=True)]
        return [x + s.mlp(s.norm2(x)) for s, x in zip(self.streams, xs, strict=True)]


class MMDiTEncoder(nn.Module):
    """E(x_v, z_m) -> (x, z). latents: (B, C, H, W) scaled VAE latents."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = nn.Linear(c.in_channels * c.patch_size**2, c.width)
        self.has_1d = c.mode == "1d"
        num_streams = 2 if self.has_1d else 1
        if self.has_1d:
            self.token_embed = nn.Parameter(torch.empty(c.num_tokens, c.width))
        self.blocks = nn.ModuleList(
            JointBlock(c.width, c.heads, c.mlp_ratio, c.qk_norm, num_streams) for _ in range(c.depth)
        )
        self.final_norms = nn.ModuleList(nn.LayerNorm(c.width, eps=1e-6) for _ in range(num_streams))
        self.to_tokens = nn.Linear(c.width, c.token_dim)
        self._context_cache: dict[tuple, tuple[list[RopeTable], torch.Tensor | None]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.has_1d:
            nn.init.normal_(self.token_embed, std=0.02)

    @property
    def token_grid(self) -> tuple[int, int] | None:
        """(h, w) of the token grid in grid2d mode, None for 1D tokens."""
        side = self.config.latent_size // self.config.patch_size
        return None if self.has_1d else (side, side)

    @property
    def num_image_tokens(self) -> int:
        return (self.config.latent_size // self.config.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """K, the number of quantized tokens per image (N in grid2d mode)."""
        return self.config.num_tokens if self.has_1d else self.num_image_tokens

    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C), row-major over the patch grid."""
        b, c, h, w = latents.shape
        p = self.config.patch_size
        x = latents.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def _context(
        self, grid: tuple[int, int], device: torch.device
    ) -> tuple[list[RopeTable], torch.Tensor | None]:
        """RoPE tables per stream and the attention mask, built once per (grid, device)."""
        key = (grid, device)
        if key not in self._context_cache:
            c = self.config
            head_dim = c.width // c.heads
            ropes = [rope_2d(*grid, head_dim, c.rope_theta, device=device)]
            mask = None
            if self.has_1d:
                ropes.append(rope_1d(c.num_tokens, head_dim, c.rope_theta, device=device))
            if c.causal_1d:
                mask = self._raster_mask(grid[0] * grid[1], c.num_tokens, device)
            self._context_cache[key] = (ropes, mask)
        return self._context_cache[key]

    @staticmethod
    def _raster_mask(n_image: int, n_tokens: int, device: torch.device) -> torch.Tensor:
        """(N + K, N + K) bool, True = may attend. Image tokens see only image tokens (so no later 1D
        token leaks into an earlier one through the image stream); 1D token i sees all image tokens
        and 1D tokens <= i."""
        total = n_image + n_tokens
        mask = torch.zeros(total, total, dtype=torch.bool, device=device)
        mask[:, :n_image] = True
        mask[n_image:, n_image:] = torch.ones(n_tokens, n_tokens, dtype=torch.bool, device=device).tril()
        return mask

    def forward(self, latents: torch.Tensor) -> EncoderOutput:
        c = self.config
        grid = (latents.shape[-2] // c.patch_size, latents.shape[-1] // c.patch_size)
        ropes, mask = self._context(grid, latents.device)
        xs = [self.patch_embed(self.patchify(latents))]
        if self.has_1d:
            xs.append(self.token_embed.expand(latents.shape[0], -1, -1))
        for block in self.blocks:
            if c.grad_checkpointing and self.training:
                xs = checkpoint(block, xs, ropes, mask, use_reentrant=False)
            else:
                xs = block(xs, ropes, mask)
        xs = [norm(x) for norm, x in zip(self.final_norms, xs, strict=True)]
        features = xs[-1]
        return EncoderOutput(x=xs[0], z=self.to_tokens(features), features=features)
