"""Rotary position embeddings (RoFormer, Su et al. 2024): 1D for token sequences, axial 2D for grids.

SPEC §2: 2D RoPE on image tokens, 1D RoPE on the 1D tokens, in the encoder and the decoder; 1D RoPE
in the generator (SPEC §4). Tables are built once per shape and applied to queries and keys with
`apply_rope`; attention scores then depend only on position offsets.

Convention: the rotated pairs are (x[..., i], x[..., i + D/2]) ("rotate half"). For the axial 2D
table the first half of the head dimension encodes the row, the second half the column.
"""

from __future__ import annotations

import torch


def _frequencies(dim: int, theta: float, device: torch.device | None) -> torch.Tensor:
    """Inverse frequencies for `dim` channels (dim even): (dim // 2,)."""
    if dim % 2:
        raise ValueError(f"RoPE dimension must be even, got {dim}")
    return 1.0 / theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float64) / dim)


def rope_1d(
    positions: torch.Tensor | int, dim: int, theta: float = 10000.0, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos/sin tables for 1D positions.

    positions: (N,) integer or float positions, or an int N meaning 0..N-1.
    Returns cos, sin: (N, dim) float32.
    """
    if isinstance(positions, int):
        positions = torch.arange(positions, device=device)
    angles = positions.to(torch.float64)[:, None] * _frequencies(dim, theta, positions.device)[None]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def rope_2d(
    height: int, width: int, dim: int, theta: float = 10000.0, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial cos/sin tables for a row-major (height, width) grid.

    Returns cos, sin: (height * width, dim); dim must be divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"2D RoPE needs a head dimension divisible by 4, got {dim}")
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    half = dim // 2
    cos_r, sin_r = rope_1d(rows, half, theta)
    cos_c, sin_c = rope_1d(cols, half, theta)
    # Re-interleave so that "rotate half" pairs channel i with i + dim/2 inside each axis.
    q = half // 2
    cos = torch.cat([cos_r[:, :q], cos_c[:, :q], cos_r[:, q:], cos_c[:, q:]], dim=-1)
    sin = torch.cat([sin_r[:, :q], sin_c[:, :q], sin_r[:, q:], sin_c[:, q:]], dim=-1)
    return cos, sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys.

    x: (B, H, N, D); cos, sin: (N, D). Computed in float32, returned in x's dtype.
    """
    out = x.float() * cos + _rotate_half(x.float()) * sin
    return out.to(x.dtype)
