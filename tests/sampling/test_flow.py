import pytest
import torch

from semtok.sampling.flow import flow_matching_targets, sample_flow, sample_timesteps


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)


def _oracle(x_v: torch.Tensor, seen: list[torch.Tensor]):
    """The exact straight-line velocity field toward x_v, recording the t it is called with."""

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return (x_t - x_v) / t.view(-1, 1, 1, 1)

    return velocity


def test_targets_recover_clean_latent() -> None:
    x_v, noise = _pair()
    t = torch.tensor([0.0, 0.3, 1.0])
    x_t, v = flow_matching_targets(x_v, t, noise)
    torch.testing.assert_close(x_t - t.view(-1, 1, 1, 1) * v, x_v)
    torch.testing.assert_close(v, noise - x_v)
    torch.testing.assert_close(x_t[0], x_v[0])  # t = 0 is the data
    torch.testing.assert_close(x_t[2], noise[2])  # t = 1 is pure noise


def test_sample_timesteps_uniform() -> None:
    t = sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert t.shape == (20000,) and t.min() >= 0 and t.max() <= 1
    assert abs(t.mean().item() - 0.5) < 0.01 and abs(t.var().item() - 1 / 12) < 0.005


@pytest.mark.parametrize("steps", [1, 3, 25])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_oracle_velocity_reaches_target(steps: int, shift: float) -> None:
    x_v, noise = _pair(1)
    seen: list[torch.Tensor] = []
    out = sample_flow(_oracle(x_v, seen), noise, steps=steps, shift=shift)
    assert len(seen) == steps and seen[0].shape == (3,)
    torch.testing.assert_close(seen[0], torch.ones(3))  # starts from pure noise
    torch.testing.assert_close(out, x_v, atol=1e-5, rtol=1e-5)


def test_shift_changes_schedule() -> None:
    x_v, noise = _pair(2)
    schedules = {}
    for shift in (1.0, 3.0):
        seen: list[torch.Tensor] = []
        sample_flow(_oracle(x_v, seen), noise, steps=5, shift=shift)
        schedules[shift] = torch.stack([t[0] for t in seen])
    torch.testing.assert_close(schedules[1.0], torch.linspace(1.0, 0.001, 5), atol=1e-6, rtol=0)
    assert (schedules[3.0][1:-1] > schedules[1.0][1:-1] + 0.05).all()  # shift > 1 spends longer near noise
