"""Where the package leaves bf16 autocast: `float32(device)` runs a block without autocast.

Two kinds of computation run in float32 inside the trainers' bf16 autocast regions:
- numerically delicate ones: the quantizer's projection and entropies, the contrastive logits;
- every convolutional network (the VAE, as SD3.5's config asks with `force_upcast`; the perceptual
  networks; the discriminator): with TF32 that costs little on a GPU, while on a CPU without native
  bf16 a bf16 convolution is ~200x slower than float32 (measured: 207 s vs 1.1 s for one 128-channel
  3x3 convolution at 128x128 on the AVX2 machine of the tests; a bf16 linear layer there is ~6x slower).
Transformers (encoder, decoder, generator) run under the configured `compute.mixed_precision`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def float32(device: torch.device) -> Iterator[None]:
    """No autocast inside the block (on `device`'s type; tensors on the meta device, which FLOP counting
    uses, never autocast)."""
    with torch.autocast("cpu" if device.type == "meta" else device.type, enabled=False):
        yield
