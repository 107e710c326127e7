"""Exponential moving average of a model's trainable parameters (SPEC: rate 0.9999)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Shadow copies (float32) of the trainable parameters, updated in place with one fused op."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = [params[n].detach().float().clone() for n in self.names]

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = [p.detach().float() for p in self._params(model)]
        torch._foreach_lerp_(self.shadow, current, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, s in zip(self._params(model), self.shadow, strict=True):
            p.copy_(s.to(p.dtype))

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the EMA weights into `model` (evaluation, final export)."""
        backup = [p.detach().clone() for p in self._params(model)]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self._params(model), backup, strict=True):
                    p.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: s.contiguous() for n, s in zip(self.names, self.shadow, strict=True)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.names) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for s, n in zip(self.shadow, self.names, strict=True):
            s.copy_(state[n])
