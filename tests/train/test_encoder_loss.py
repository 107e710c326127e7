"""The weights of the encoder's loss terms in a real training step (SPEC §2, Table 10's LFQ row):
the total is L_main + λ_q·L_quant + commit_weight·mean((z − sg(q))²) + λ_s·(L_distill + L_contra),
with the commitment term outside λ_q, in Stage I and in Stage II with a trained encoder.

The loss handed to the optimiser in the first step of `train_stage1` / `train_stage2` is compared
with one recomputed from the quantizer's input z, so the commitment weight is checked independently
of the code that applies it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from semtok.jobs.tokenizer import train_stage1, train_stage2
from semtok.models.quantizer import LookupFreeQuantizer
from semtok.train.loop import Trainer
from semtok.train.tokenizer import FlowMatchingObjective, RefinerObjective

OVERRIDES = [
    "pretrained.lpips.source=random",
    "pretrained.lpips.arch={widths: [4, 8, 8, 8, 8]}",
    "pretrained.resnet.source=random",
    "pretrained.resnet.arch={block: basic, layers: [1, 1, 1, 1], num_classes: 4, image_size: 32}",
    "tokenizer.stage1.optim={steps: 1, batch_size: 8, ckpt_every: 1, log_every: 1}",
    "tokenizer.stage2.optim={steps: 1, batch_size: 4, ckpt_every: 1, log_every: 1}",
    "tokenizer.stage2.resnet_size=32",
    "tokenizer_variants.finetune-only.quantizer=lfq",
]


@pytest.fixture(scope="module")
def cfg(tiny, tmp_path_factory):
    config = tiny.config(tmp_path_factory.mktemp("encoder-loss"), OVERRIDES)
    tiny.build_images(config)
    tiny.build_features(config)
    return config


@pytest.fixture
def first_step(monkeypatch) -> dict[str, Any]:
    """Records the first LFQ input z and output, the first output of a stage's objective, and the first
    StepOutput given to the optimiser."""
    seen: dict[str, Any] = {}
    quantize, optimise = LookupFreeQuantizer.forward, Trainer._optimise

    def watched_quantize(self, z):
        out = quantize(self, z)
        seen.setdefault("z", z.detach().float())
        seen.setdefault("q", out)
        return out

    def watched(forward):
        def watched_forward(self, *args, **kwargs):
            out = forward(self, *args, **kwargs)
            seen.setdefault("out", out)
            return out

        return watched_forward

    def watched_optimise(self, out):
        seen.setdefault("step", out)
        return optimise(self, out)

    monkeypatch.setattr(LookupFreeQuantizer, "forward", watched_quantize)
    for objective in (FlowMatchingObjective, RefinerObjective):
        monkeypatch.setattr(objective, "forward", watched(objective.forward))
    monkeypatch.setattr(Trainer, "_optimise", watched_optimise)
    return seen


def encoder_terms(cfg, variant: str, seen: dict[str, Any]) -> torch.Tensor:
    """λ_q·(per-sample − codebook entropy) + commit_weight·mean((z − sign z)²) + λ_s·(distill + contra)."""
    t = cfg.tokenizer_variant(variant)
    z, q, out = seen["z"], seen["q"], seen["out"]
    commitment = ((z - z.sign()) ** 2).mean()
    entropy = (q.per_sample_entropy - q.codebook_entropy).detach()
    semantic = (out["distill"] + out["contra"]).detach()
    return t.entropy.weight * entropy + t.entropy.commit_weight * commitment + t.semantic.weight * semantic


def test_stage1_lfq_commitment_weighs_commit_weight_not_lambda_q_times_it(cfg, first_step, tmp_path):
    t = cfg.tokenizer_variant("lfq")
    assert t.quantizer == "lfq" and t.entropy.commit_weight == 0.25
    train_stage1(cfg, "lfq", tmp_path / "stage1")
    expected = first_step["out"]["diff"].detach() + encoder_terms(cfg, "lfq", first_step)
    loss = first_step["step"].losses["model"].detach()
    commitment = ((first_step["z"] - first_step["z"].sign()) ** 2).mean()
    print(f"Stage I loss {loss:.5f}, expected {expected:.5f}; mean((z - sg(q))^2) = {commitment:.4f}")
    assert commitment > 0.01  # large enough that a weight of λ_q·0.25 instead of 0.25 shows
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_stage2_trained_lfq_encoder_gets_the_same_encoder_terms(cfg, first_step, tmp_path):
    t = cfg.tokenizer_variant("finetune-only")
    assert t.quantizer == "lfq" and not t.stage2.freeze_encoder
    train_stage2(cfg, "finetune-only", tmp_path / "stage2")
    step = first_step["step"]
    perceptual = sum(v for k, v in step.logs.items() if k.startswith("per_"))
    expected = (
        step.logs["rec"] + t.stage2.lambda_p * perceptual + encoder_terms(cfg, "finetune-only", first_step)
    )
    loss = step.losses["model"].detach()
    print(f"Stage II loss {loss:.5f}, expected {expected:.5f}")
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
