"""The trainers' bf16 autocast and torch.compile paths on the CPU, through the functions the workflow's
jobs call: Stage I, Stage II with every loss term from the first step (LPIPS, the ResNet loss and its
antialiased resize, the discriminator), the token dump, the generator and sampling, under
`compute.mixed_precision: bf16` and `compute.compile: true` (backend aot_eager on the CPU).

At the tiny config's widths: at the paper's, bf16 matrix products on a CPU without native bf16 (this
machine: AVX2) take minutes a step — measured 0.4 GFLOP/s for a 1024x1536 @ 1536x1536 product against
32 in float32 (benchmarks/RESULTS.md) — so the paper-shape chain (tests/workflow/test_paper_smoke.py)
runs its matrices in float32 there; the code paths are these."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from safetensors.torch import load_file

from semtok import paths
from semtok.data.tokens import dump_shard
from semtok.jobs.generator import train_generator
from semtok.jobs.tokenizer import train_stage1, train_stage2
from semtok.sampling.pipeline import SemTokPipeline

TWO_STEPS = "{steps: 2, batch_size: 4, warmup: 1, ckpt_every: 2, log_every: 1}"
SETTINGS = [
    "compute.mixed_precision=bf16",
    "compute.compile=true",
    "pretrained.lpips.source=random",
    "pretrained.lpips.arch={widths: [4, 8, 8, 8, 8]}",
    "pretrained.resnet.source=random",
    "pretrained.resnet.arch={block: basic, layers: [1, 1, 1, 1], num_classes: 4, image_size: 32}",
    f"tokenizer.stage1.optim={TWO_STEPS}",
    f"tokenizer.stage2.optim={TWO_STEPS}",
    "tokenizer.stage2.gan.start=0",
    f"generator.optim={TWO_STEPS}",
]


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    from accelerate.state import AcceleratorState

    # a job is one process; here earlier in-process trainers fixed accelerate's precision for the process
    AcceleratorState._reset_state(True)
    cfg = tiny.config(tmp_path_factory.mktemp("bf16"), SETTINGS)
    tiny.build_images(cfg)
    tiny.build_features(cfg)
    records = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("semtok.train")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        stage1 = paths.tokenizer_dir(cfg.out, "b18", "stage1")
        train_stage1(cfg, "b18", stage1)
        stage2 = paths.tokenizer_dir(cfg.out, "b18", "stage2")
        train_stage2(cfg, "b18", stage2)
        tokens = []
        for i in range(cfg.data.train_shards):
            tokens.append(paths.token_shard(cfg.out, "b18", i))
            dump_shard(
                cfg, "b18", paths.feature_shard(cfg.out, "latents", "train", i), tokens[-1], batch_size=4
            )
        generator = paths.generator_dir(cfg.out, "ar-l")
        train_generator(cfg, "ar-l", [str(t) for t in tokens], generator)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        AcceleratorState._reset_state(True)
    return (
        cfg,
        {"stage1": stage1, "stage2": stage2, "generator": generator},
        [r.getMessage() for r in records],
    )


@pytest.mark.parametrize("job", ["tokenizer-b18-stage1", "tokenizer-b18-stage2", "generator-ar-l"])
def test_each_trainer_ran_bf16_with_compiled_blocks_and_finite_losses(trained, job):
    cfg, _, messages = trained
    mine = [m for m in messages if m.startswith(f"{job}:")]
    assert any("mixed precision bf16" in m for m in mine), messages
    assert any("transformer blocks compiled (backend aot_eager)" in m for m in messages), messages
    lines = (paths.log_dir(cfg.out, job) / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    assert len(logged) == 2
    values = [v for rec in logged for v in rec.values() if isinstance(v, float)]
    assert any(k.startswith("loss/") for k in logged[0]) and all(math.isfinite(v) for v in values), logged


def test_stage2_ran_every_loss_term_under_bf16(trained):
    cfg, _, _ = trained
    metrics = paths.log_dir(cfg.out, "tokenizer-b18-stage2") / "metrics.jsonl"
    logged = json.loads(metrics.read_text().splitlines()[0])
    assert {"per_lpips", "per_resnet", "gan_g", "loss/disc"} <= logged.keys(), sorted(logged)
    assert logged["gan_active"] == 1.0


def test_exported_weights_are_float32_and_finite_and_sample(trained):
    cfg, out, _ = trained
    for name, folder in out.items():
        for key, tensor in load_file(folder / "diffusion_pytorch_model.safetensors").items():
            if tensor.is_floating_point():
                assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all(), (name, key)
    pipe = SemTokPipeline.from_pretrained(out["generator"], tokenizer=out["stage2"])
    images = pipe(
        class_labels=[0, 1], num_inference_steps=2, generator=torch.Generator().manual_seed(0)
    ).images
    assert len(images) == 2 and images[0].size == (cfg.data.resolution, cfg.data.resolution)
