"""Entry points of `workflow/rules/generator.smk` (SPEC §4): training a masked autoregressive generator
variant (`train-ar`), and sampling it (`sample`) through the generation pipeline
(semtok/sampling/pipeline.py) into an ADM-style `.npz` (`arr_0` uint8 N×H×W×3, plus `labels` and
`seeds`).

Sampling: `sample.per_class` images per class, in class order. Work is cut into chunks of
`sample.chunk` images, each written atomically to `<output>.chunks/` with its seed, so a killed or
preempted job resumes at the first missing chunk; the final file appears only when every chunk exists.
The "progressive" setting (Fig. 5) instead records the images decoded from the partial token sequences
after a few chosen steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semtok import keys, paths
from semtok.config import Config
from semtok.data.imagenet import num_classes
from semtok.data.images import to_uint8
from semtok.data.tokens import TokenDataset
from semtok.jobs import EntryPoint
from semtok.models.factory import build_generator, load_generator, load_tokenizer
from semtok.sampling.pipeline import SemTokPipeline
from semtok.sampling.settings import same_as_main, sample_config, sampler_kwargs
from semtok.train.compile import compile_blocks
from semtok.train.generator import generator_step
from semtok.train.loop import Objective, Trainer, segment_seed
from semtok.utils.devices import job_device
from semtok.utils.io import atomic_path, save_npz
from semtok.utils.progress import progress

PROGRESSIVE_POINTS = 6  # partial sequences shown in Fig. 5


def train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="generator variant (config: generator_variants)")
    parser.add_argument("--tokens", nargs="+", required=True, help="token shards of the variant's tokenizer")
    parser.add_argument("--output", required=True, help="folder for the final (EMA) generator")


def train_generator(cfg: Config, variant: str, token_shards: list[str], output: Path) -> dict[str, Any]:
    g = cfg.generator_variant(variant)
    seed = cfg.variant_seed(g)
    torch.manual_seed(seed)
    model = build_generator(cfg, variant)
    data = TokenDataset(token_shards, model.config.bits)
    job = f"generator-{variant}"
    trainer = Trainer(
        job,
        {"model": Objective(model, g.optim)},
        cfg.compute,
        paths.checkpoint_dir(cfg.out, job),
        paths.log_dir(cfg.out, job),
        seed=seed,
        settings=keys.digest(keys.generator(cfg, variant)),
        hparams=keys.hparams(keys.generator(cfg, variant)),
        project=cfg.run_id,
    )
    compile_blocks(trainer.unwrap(), cfg.compute.compile, trainer.device)
    acc = trainer.accelerator

    def make_batches(segment: int):
        stream = data.batches(
            g.optim.batch_size, segment_seed(seed, segment), acc.process_index, acc.num_processes
        )
        for batch in stream:
            yield {k: v.to(trainer.device, non_blocking=True) for k, v in batch.items()}

    trainer.fit(make_batches, generator_step(g))
    trainer.export(lambda m, p: m.save_pretrained(p), output)
    params = sum(p.numel() for p in model.parameters())
    return {
        "variant": variant,
        "steps": trainer.step,
        "params": params,
        "tokens": len(data),
        "output": str(output),
    }


def train_ar(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return train_generator(cfg, args.variant, args.tokens, Path(args.output))


def sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="generator variant")
    parser.add_argument(
        "--setting", default="main", help="sampling setting (main, cfg-linear-3.0, steps-16, ...)"
    )
    parser.add_argument("--output", required=True, help="the .npz to write")
    parser.add_argument(
        "--same-as",
        default=None,
        help="the variant's main samples: copied when the setting repeats the main sample config",
    )


def pipeline(cfg: Config, variant: str) -> SemTokPipeline:
    """Generator `variant` and its tokenizer, on the job's device (no per-batch progress bar: the job
    shows its chunks)."""
    device = job_device(cfg.compute)
    tokenizer = cfg.generator_variant(variant).tokenizer
    pipe = SemTokPipeline(load_generator(cfg, variant, device), load_tokenizer(cfg, tokenizer, device=device))
    pipe.set_progress_bar_config(disable=True)
    pipe.mixed_precision = cfg.compute.mixed_precision  # as the trainers (in the sample job's key)
    return pipe


def sample_main(cfg: Config, variant: str, setting: str, output: Path) -> dict[str, Any]:
    sc = sample_config(cfg, variant, setting)
    base_seed = cfg.variant_seed(cfg.generator_variant(variant))
    pipe = pipeline(cfg, variant)
    labels = np.repeat(np.arange(num_classes(cfg), dtype=np.int64), sc.per_class)
    chunk_dir = output.with_name(output.name + ".chunks")
    chunks = [labels[i : i + sc.chunk] for i in range(0, len(labels), sc.chunk)]
    for c, chunk_labels in enumerate(progress(chunks, desc=f"sample {variant} {setting}")):
        path = chunk_dir / f"chunk-{c:05d}.npz"
        if path.exists():
            continue  # finished before a kill or preemption
        images, seeds = [], []
        for b, start in enumerate(range(0, len(chunk_labels), sc.batch_size)):
            seed = base_seed * 1_000_003 + c * 10_007 + b
            generator = torch.Generator(pipe.device).manual_seed(seed)
            batch = chunk_labels[start : start + sc.batch_size]
            images.append(pipe(batch, generator=generator, output_type="np", **sampler_kwargs(sc)).images)
            seeds.append(np.full(len(batch), seed, dtype=np.int64))
        save_npz(path, arr_0=np.concatenate(images), labels=chunk_labels, seeds=np.concatenate(seeds))
    parts = [np.load(chunk_dir / f"chunk-{c:05d}.npz") for c in range(len(chunks))]
    save_npz(
        output,
        arr_0=np.concatenate([p["arr_0"] for p in parts]),
        labels=np.concatenate([p["labels"] for p in parts]),
        seeds=np.concatenate([p["seeds"] for p in parts]),
    )
    shutil.rmtree(chunk_dir)
    return {"variant": variant, "setting": setting, "images": int(len(labels)), "output": str(output)}


def sample_progressive(cfg: Config, variant: str, output: Path) -> dict[str, Any]:
    """Fig. 5: decode the partial token sequences of raster-order decoding after a few steps; tokens
    not yet generated are all-zero bits."""
    sc = sample_config(cfg, variant, "progressive")
    pipe = pipeline(cfg, variant)
    n = cfg.evaluation.grid_images
    labels = torch.arange(n) % num_classes(cfg)
    causal = pipe.transformer.config.causal
    total = pipe.transformer.config.num_tokens if causal else sc.steps
    points = sorted({int(round(x)) for x in np.linspace(0, total - 1, PROGRESSIVE_POINTS)})
    generator = torch.Generator(pipe.device).manual_seed(cfg.variant_seed(cfg.generator_variant(variant)))
    out = pipe.sample_tokens(labels, dataclasses.replace(sc, order="raster"), generator, return_steps=points)
    partial, fraction = [], []
    for step in points:
        bits, known = out.partial[step]
        partial.append(to_uint8(pipe.decode(bits & known[..., None])))
        fraction.append(float(known.float().mean()))
    save_npz(
        output,
        partial=np.stack(partial),
        steps=np.asarray(points, dtype=np.int64),
        fraction=np.asarray(fraction, dtype=np.float64),
        labels=labels.numpy(),
    )
    return {"variant": variant, "setting": "progressive", "points": points, "output": str(output)}


def copy_main(cfg: Config, variant: str, setting: str, main: Path, output: Path) -> dict[str, Any]:
    """The samples of a setting that repeats the main sample config (`same_as_main`): main's file,
    copied atomically; any other setting is refused rather than mislabelled."""
    if not same_as_main(cfg, variant, setting):
        raise SystemExit(
            f"sample: --same-as is for a setting that repeats {variant}'s main sample config; "
            f"{setting!r} differs from it ({sample_config(cfg, variant, setting)})"
        )
    if not main.is_file():
        raise SystemExit(f"sample: --same-as {main}: no such file")
    with atomic_path(output) as tmp:
        shutil.copyfile(main, tmp)
    with np.load(output) as f:
        images = len(f["labels"])
    return {
        "variant": variant,
        "setting": setting,
        "images": images,
        "same_as": str(main),
        "output": str(output),
    }


def sample(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    if args.same_as is not None:
        return copy_main(cfg, args.variant, args.setting, Path(args.same_as), Path(args.output))
    if args.setting == "progressive":
        return sample_progressive(cfg, args.variant, Path(args.output))
    return sample_main(cfg, args.variant, args.setting, Path(args.output))


ENTRY_POINTS = {
    "train-ar": EntryPoint(train_arguments, train_ar),
    "sample": EntryPoint(sample_arguments, sample),
}
