"""Rectified-flow training targets and the Euler sampler of the Stage-I decoder (SPEC §2, Stage I).

Convention (SD3's): x_t = t * eps + (1 - t) * x_v with t in [0, 1] (t = 1 is pure noise), and the
model predicts the velocity v = eps - x_v = dx_t/dt. A network that takes SD3's timestep is fed
1000 * t (`TokenDecoder.forward` does this itself and takes t).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample_timesteps(
    batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """t ~ U[0, 1]: (B,)."""
    return torch.rand(batch_size, generator=generator, device=device)


def flow_matching_targets(
    x_v: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy input and velocity target.

    x_v, noise: (B, C, H, W); t: (B,). Returns x_t = t * eps + (1 - t) * x_v and v = eps - x_v.
    """
    t = t.to(x_v.dtype).view(-1, *([1] * (x_v.dim() - 1)))
    return t * noise + (1 - t) * x_v, noise - x_v


@torch.no_grad()
def sample_flow(velocity_fn: VelocityFn, noise: torch.Tensor, steps: int, shift: float) -> torch.Tensor:
    """Integrate dx/dt = v(x, t) with Euler steps from t = 1 (noise) to t = 0.

    velocity_fn(x_t: (B, C, H, W), t: (B,)) -> v: (B, C, H, W); noise: (B, C, H, W) = x at t = 1.
    The t grid is the sigma schedule of diffusers' `FlowMatchEulerDiscreteScheduler(shift=shift)`
    (shift = 1: uniform, as training t is uniform). The state is kept in noise's dtype.
    Returns x at t = 0: (B, C, H, W).
    """
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps, device=noise.device)
    scheduler.set_begin_index(0)  # step i uses sigmas[i] -> sigmas[i + 1]; no timestep lookup (host sync)
    x = noise
    for timestep, sigma in zip(scheduler.timesteps, scheduler.sigmas[:-1], strict=True):
        v = velocity_fn(x, sigma.expand(x.shape[0]))
        x = scheduler.step(v.to(noise.dtype), timestep, x, return_dict=False)[0]
    return x
