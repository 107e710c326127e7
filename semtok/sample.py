"""`semtok sample --variant G --setting S --output NPZ`: class-conditional samples of a generator,
decoded by its tokenizer's one-step refiner, as an ADM-style `.npz` (`arr_0` uint8 N×H×W×3, plus
`labels` and `seeds`).

`sample.per_class` images per class, in class order. Work is cut into chunks of `sample.chunk`
images, each written atomically to `<output>.chunks/` with its seed, so a killed or preempted job
resumes at the first missing chunk; the final file appears only when every chunk exists.
The "progressive" setting (Fig. 5) instead records the images decoded from the partial token
sequences after a few chosen steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from semtok import paths
from semtok.config import Config, SampleConfig
from semtok.data.imagenet import num_classes
from semtok.models.factory import load_tokenizer
from semtok.models.generator import MaskedGenerator
from semtok.report.settings import sample_config
from semtok.sampling.masked import sample
from semtok.utils.io import save_npz

NEEDS_CONFIG = True
PROGRESSIVE_POINTS = 6  # partial sequences shown in Fig. 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="generator variant")
    parser.add_argument(
        "--setting", default="main", help="sampling setting (main, cfg-linear-3.0, steps-16, ...)"
    )
    parser.add_argument("--output", required=True, help="the .npz to write")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] → (B, H, W, 3) uint8 (round half up, as ADM)."""
    return (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Sampler:
    def __init__(self, cfg: Config, variant: str) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.generator = (
            MaskedGenerator.from_pretrained(paths.generator_dir(cfg.out, variant)).to(self.device).eval()
        )
        self.tokenizer = load_tokenizer(cfg, cfg.generator_variant(variant).tokenizer, device=self.device)
        self.autocast = torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
        )

    def tokens(
        self, labels: torch.Tensor, sc: SampleConfig, seed: int, return_steps: tuple[int, ...] = ()
    ) -> Any:
        gen = torch.Generator(self.device).manual_seed(seed)
        with self.autocast:
            return sample(
                self.generator,
                labels.to(self.device),
                steps=sc.steps,
                order=sc.order,
                top_p=sc.top_p,
                cfg_scale=sc.cfg_scale,
                cfg_schedule=sc.cfg_schedule,
                temperature=sc.temperature,
                choice_temperature=sc.choice_temperature,
                generator=gen,
                return_steps=return_steps,
            )

    def decode(self, bits: torch.Tensor) -> np.ndarray:
        with self.autocast:
            return to_uint8(self.tokenizer.decode(bits))


def sample_main(cfg: Config, variant: str, setting: str, output: Path) -> dict[str, Any]:
    sc = sample_config(cfg, variant, setting)
    sampler = Sampler(cfg, variant)
    labels = np.repeat(np.arange(num_classes(cfg), dtype=np.int64), sc.per_class)
    chunk_dir = output.with_name(output.name + ".chunks")
    chunks = [labels[i : i + sc.chunk] for i in range(0, len(labels), sc.chunk)]
    for c, chunk_labels in enumerate(tqdm(chunks, desc=f"sample {variant} {setting}")):
        path = chunk_dir / f"chunk-{c:05d}.npz"
        if path.exists():
            continue  # finished before a kill or preemption
        images, seeds = [], []
        for b, start in enumerate(range(0, len(chunk_labels), sc.batch_size)):
            seed = cfg.seed * 1_000_003 + c * 10_007 + b
            out = sampler.tokens(torch.from_numpy(chunk_labels[start : start + sc.batch_size]), sc, seed)
            images.append(sampler.decode(out.bits))
            seeds.append(np.full(len(out.bits), seed, dtype=np.int64))
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
    sampler = Sampler(cfg, variant)
    n = cfg.evaluation.grid_images
    labels = torch.arange(n) % num_classes(cfg)
    causal = sampler.generator.config.causal
    total = sampler.generator.config.num_tokens if causal else sc.steps
    points = sorted({int(round(x)) for x in np.linspace(0, total - 1, PROGRESSIVE_POINTS)})
    order = dataclasses.replace(sc, order="raster")
    out = sampler.tokens(labels, order, cfg.seed, return_steps=tuple(points))
    partial, fraction = [], []
    for step in points:
        bits, known = out.partial[step]
        partial.append(sampler.decode(bits & known[..., None]))
        fraction.append(float(known.float().mean()))
    save_npz(
        output,
        partial=np.stack(partial),
        steps=np.asarray(points, dtype=np.int64),
        fraction=np.asarray(fraction, dtype=np.float64),
        labels=labels.numpy(),
    )
    return {"variant": variant, "setting": "progressive", "points": points, "output": str(output)}


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    if args.setting == "progressive":
        return sample_progressive(cfg, args.variant, Path(args.output))
    return sample_main(cfg, args.variant, args.setting, Path(args.output))
