"""Training the masked autoregressive generator (SPEC §4): per sample a mask ratio r ~ U[0.7, 1] (or
MAR's truncated normal), ⌈K·r⌉ random positions masked, bitwise cross-entropy (label smoothing 0.01) on
the masked positions only, class dropout 0.1 for CFG (inside the model). The raster variant (causal)
trains next-token prediction over all positions. The training script is the `train-ar` job
(semtok/jobs/generator.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from semtok.config import GeneratorConfig
from semtok.models.generator import sample_mask
from semtok.train.loop import StepOutput, Trainer


def generator_step(g: GeneratorConfig) -> Callable[[Trainer, dict[str, torch.Tensor]], StepOutput]:
    """The loop's step for generator section `g`: masks drawn per sample (none for a causal model),
    the model's logits and its loss; the bit accuracy of the argmax prediction is logged."""

    def step(tr: Trainer, batch: dict[str, torch.Tensor]) -> StepOutput:
        bits, labels = batch["bits"], batch["cls"]
        net = tr.unwrap()
        mask = None
        if not net.config.causal:
            mask = sample_mask(
                bits.shape[0],
                bits.shape[1],
                g.mask.min_ratio,
                g.mask.max_ratio,
                g.mask.dist,
                device=bits.device,
            )
        with tr.autocast():
            logits = tr.modules["model"](bits, mask, labels)  # the model drops labels (class_dropout)
            loss, accuracy = net.loss(logits, bits, mask, label_smoothing=g.label_smoothing)
        return StepOutput(losses={"model": loss}, logs={"bit_accuracy": accuracy})

    return step
