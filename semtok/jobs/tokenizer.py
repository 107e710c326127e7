"""Entry points of `workflow/rules/tokenizer.smk` (SPEC §2, §3): Stage I and Stage II of a tokenizer
variant, and the token dump of one shard. The objectives, their steps and the model factory are the
library's (semtok/train/tokenizer.py, semtok/models/factory.py); here each stage's training run is set
up: its checkpoints and logs, its data, its export."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from semtok import keys, paths, registry
from semtok.config import Config, ConfigError
from semtok.data.tokens import dump_shard
from semtok.jobs import EntryPoint
from semtok.losses.perceptual import PerceptualLoss
from semtok.models.discriminator import Discriminator
from semtok.models.factory import build_tokenizer
from semtok.train.compile import compile_blocks
from semtok.train.loop import Objective, Trainer
from semtok.train.tokenizer import (
    FlowMatchingObjective,
    RefinerObjective,
    SiglipOnline,
    data_stream,
    stage1_step,
    stage2_start,
    stage2_step,
)


def stage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="tokenizer variant (config: tokenizer_variants)")
    parser.add_argument(
        "--output", required=True, help="folder for the final (EMA) tokenizer (SemTok.from_pretrained)"
    )


def save_tokenizer(objective: torch.nn.Module, folder: Path) -> None:
    objective.tokenizer.save_pretrained(folder)


def trainer(cfg: Config, job: str, objectives: dict[str, Objective], settings: dict[str, Any]) -> Trainer:
    """The loop of tokenizer job `job`: checkpoints and logs under the run's folders, resumed only under
    the job's settings key (semtok/keys.py), seeded by the variant's seed."""
    return Trainer(
        job,
        objectives,
        cfg.compute,
        paths.checkpoint_dir(cfg.out, job),
        paths.log_dir(cfg.out, job),
        seed=settings["seed"],  # the variant's seed (keys.stage1, keys.stage2)
        settings=keys.digest(settings),
        hparams=keys.hparams(settings),
        project=cfg.run_id,
    )


def train_stage1(cfg: Config, variant: str, output: Path) -> dict[str, Any]:
    t = cfg.tokenizer_variant(variant)
    if t.stage1.from_variant is not None:
        raise ConfigError(
            f"tokenizer_variants.{variant}: Stage I is {t.stage1.from_variant!r} (stage1.from_variant); nothing to train"
        )
    torch.manual_seed(cfg.variant_seed(t))
    model = build_tokenizer(cfg, variant)
    loop = trainer(
        cfg,
        f"tokenizer-{variant}-stage1",
        {"model": Objective(FlowMatchingObjective(model), t.stage1.optim)},
        keys.stage1(cfg, variant),
    )
    compile_blocks(loop.unwrap(), cfg.compute.compile, loop.device)
    online = not cfg.data.precompute_siglip and model.semantic is not None
    siglip = SiglipOnline(cfg, loop.device) if online else None
    features = ("latents",) if online or model.semantic is None else ("latents", "siglip")
    make_batches = data_stream(cfg, loop, t.stage1.optim.batch_size, features, online, cfg.variant_seed(t))
    loop.fit(make_batches, stage1_step(t, siglip))
    loop.export(save_tokenizer, output)
    return {"variant": variant, "steps": loop.step, "output": str(output)}


def train_stage2(cfg: Config, variant: str, output: Path) -> dict[str, Any]:
    t = cfg.tokenizer_variant(variant)
    s2 = t.stage2
    torch.manual_seed(cfg.variant_seed(t))
    model = stage2_start(cfg, variant)
    if cfg.compute.grad_checkpointing:
        model.vae.enable_gradient_checkpointing()
    disc = Discriminator(s2.gan.channels, s2.gan.channel_mults)
    objectives = {
        "model": Objective(RefinerObjective(model), s2.optim),
        "disc": Objective(disc, dataclasses.replace(s2.optim, warmup=0), lr=s2.gan.lr, ema=False),
    }
    loop = trainer(cfg, f"tokenizer-{variant}-stage2", objectives, keys.stage2(cfg, variant))
    compile_blocks(loop.unwrap(), cfg.compute.compile, loop.device)
    perceptual = PerceptualLoss(
        s2.perceptual,
        registry.load_lpips(cfg) if "lpips" in s2.perceptual else None,
        registry.load_resnet(cfg) if "resnet" in s2.perceptual else None,
        s2.resnet_size,
    ).to(loop.device)
    semantic = not s2.freeze_encoder and model.semantic is not None
    online = semantic and not cfg.data.precompute_siglip
    siglip = SiglipOnline(cfg, loop.device) if online else None
    features = ("latents", "siglip") if semantic and not online else ("latents",)
    make_batches = data_stream(cfg, loop, s2.optim.batch_size, features, True, cfg.variant_seed(t))
    loop.fit(make_batches, stage2_step(t, perceptual, siglip))
    loop.export(save_tokenizer, output)
    return {"variant": variant, "steps": loop.step, "output": str(output)}


def stage1(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return train_stage1(cfg, args.variant, Path(args.output))


def stage2(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return train_stage2(cfg, args.variant, Path(args.output))


def dump_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="tokenizer variant")
    parser.add_argument("--input", required=True, help="latent shard (data/latents/train/train-XXXXX.tar)")
    parser.add_argument("--output", required=True, help="token shard to write")


def dump_tokens(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return dump_shard(cfg, args.variant, Path(args.input), Path(args.output), cfg.tokenizer.dump_batch_size)


ENTRY_POINTS = {
    "stage1": EntryPoint(stage_arguments, stage1),
    "stage2": EntryPoint(stage_arguments, stage2),
    "dump-tokens": EntryPoint(dump_arguments, dump_tokens),
}
