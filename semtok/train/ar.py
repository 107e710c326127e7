"""`semtok train-ar --variant NAME --output DIR`: the masked autoregressive generator (SPEC §4).

Per sample a mask ratio r ~ U[0.7, 1] (or MAR's truncated normal), ⌈K·r⌉ random positions masked,
bitwise cross-entropy (label smoothing 0.01) on the masked positions only, class dropout 0.1 for
CFG. The raster variant (causal) trains next-token prediction over all positions.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from semtok import paths
from semtok.config import Config, section_hash
from semtok.data.imagenet import num_classes
from semtok.data.tokens import TokenDataset
from semtok.models.generator import GeneratorConfig, MaskedGenerator, sample_mask
from semtok.train.compile import compile_blocks
from semtok.train.loop import Objective, StepOutput, Trainer
from semtok.train.tokenizer import tokenizer_settings

NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="generator variant (config: generator_variants)")
    parser.add_argument("--tokens", nargs="+", required=True, help="token shards of the variant's tokenizer")
    parser.add_argument("--output", required=True, help="folder for the final (EMA) generator")


def tokenizer_shape(cfg: Config, tokenizer_variant: str) -> tuple[int, int]:
    """(K, d) of a trained tokenizer, from its saved config."""
    from semtok.models.tokenizer import SemTok

    config = SemTok.load_config(paths.tokenizer_dir(cfg.out, tokenizer_variant, "stage2"))
    return config["encoder_config"]["num_tokens"], config["encoder_config"]["token_dim"]


def generator_config(cfg: Config, variant: str) -> GeneratorConfig:
    g = cfg.generator_variant(variant)
    depth, width, heads = g.sizes[g.arch.size]
    k, d = tokenizer_shape(cfg, g.tokenizer)
    return GeneratorConfig(
        depth=depth,
        width=width,
        heads=heads,
        num_tokens=k,
        bits=d,
        num_classes=num_classes(cfg),
        head=g.arch.head,
        causal=g.arch.causal,
        class_dropout=g.class_dropout,
        grad_checkpointing=cfg.compute.grad_checkpointing,
    )


def train_generator(cfg: Config, variant: str, token_shards: list[str], output: Path) -> dict[str, Any]:
    g = cfg.generator_variant(variant)
    torch.manual_seed(cfg.seed)
    model = MaskedGenerator.build(generator_config(cfg, variant))
    data = TokenDataset(token_shards, model.config.bits)
    job = f"generator-{variant}"
    trainer = Trainer(
        job,
        {"model": Objective(model, g.optim)},
        cfg.compute,
        paths.checkpoint_dir(cfg.out, job),
        paths.log_dir(cfg.out, job),
        seed=cfg.seed,
        settings=section_hash(g, *tokenizer_settings(cfg, g.tokenizer)),
    )
    compile_blocks(trainer.unwrap(), cfg.compute.compile)
    acc = trainer.accelerator
    causal = model.config.causal

    def make_batches(segment: int):
        stream = data.batches(
            g.optim.batch_size, cfg.seed * 100_003 + segment, acc.process_index, acc.num_processes
        )
        for batch in stream:
            yield {k: v.to(trainer.device, non_blocking=True) for k, v in batch.items()}

    def step_fn(tr: Trainer, batch: dict[str, torch.Tensor]) -> StepOutput:
        bits, labels = batch["bits"], batch["cls"]
        net = tr.unwrap()
        mask = None
        if not causal:
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

    trainer.fit(make_batches, step_fn)
    trainer.export(lambda m, p: m.save_pretrained(p), output)
    params = sum(p.numel() for p in model.parameters())
    return {
        "variant": variant,
        "steps": trainer.step,
        "params": params,
        "tokens": len(data),
        "output": str(output),
    }


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return train_generator(cfg, args.variant, args.tokens, Path(args.output))
