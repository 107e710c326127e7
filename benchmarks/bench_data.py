"""Data-stage throughput: shard writing and our webdataset loader vs. a plain torchvision ImageFolder.

    python benchmarks/bench_data.py [--images 512] [--workers 2] [--batch-size 64] [--csv out.csv]

On the same synthetic images (random sizes in [256, 400] px, ImageNet folder layout) it times:
- shard writing (`semtok shard`'s code: decode, ADM centre crop to 256, JPEG q95, tar), images/s;
- our loader over pre-encoded latent shards (SD3.5 shape 16x32x32 fp16, image + flip; filled with
  random values: the loader's cost does not depend on them, and no VAE is needed), samples/s;
- our loader over the image shards (decode the 256 px JPEG, flip), samples/s;
- the baseline: torchvision ImageFolder + PIL + transforms (decode the original JPEG, resize 256,
  centre crop, random flip, to tensor), samples/s — the pipeline the pre-encoded shards replace.
Every loader runs one shuffled pass with the same batch size and worker count.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from semtok import paths
from semtok.config import Config, from_dict
from semtok.data import encode, imagenet, shards, synthetic
from semtok.data.loader import make_loader

ROOT = Path(__file__).resolve().parents[1]
RESOLUTION = 256
CLASSES = 8
SHARDS = 4


def bench_config(out_dir: Path, images: int, workers: int) -> Config:
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["out_dir"] = str(out_dir)
    per_class = max(1, images // CLASSES)
    return from_dict(
        raw,
        [
            f"data.synthetic={{num_classes: {CLASSES}, train_per_class: {per_class}, val_per_class: 1,"
            f" min_size: {RESOLUTION}, max_size: 400, seed: 0}}",
            f"data.resolution={RESOLUTION}",
            f"data.train_shards={SHARDS}",
            "data.shuffle_buffer=256",
            f"compute.num_workers={workers}",
            "pretrained.vae.source=random",  # latent normalisation factors from the tiny config only
        ],
    )


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def write_image_shards(cfg: Config) -> int:
    rows, _ = imagenet.build_index(cfg, "train")
    for i in range(SHARDS):
        shards.write_image_shard(
            [r for r in rows if r.shard == i],
            paths.image_shard(cfg.out, "train", i),
            resolution=cfg.data.resolution,
            quality=cfg.data.jpeg_quality,
        )
    return len(rows)


def write_random_latent_shards(cfg: Config) -> None:
    rng = np.random.default_rng(0)
    for i in range(SHARDS):
        samples = [
            {
                "__key__": s["__key__"],
                "cls": s["cls"],
                "latent.npy": encode.npy_bytes(rng.standard_normal((16, 32, 32)).astype(np.float16)),
                "latent_flip.npy": encode.npy_bytes(rng.standard_normal((16, 32, 32)).astype(np.float16)),
            }
            for s in shards.read_shard(paths.image_shard(cfg.out, "train", i))
        ]
        shards.write_shard(paths.feature_shard(cfg.out, "latents", "train", i), samples)


def count_samples(batches) -> int:
    total = 0
    for batch in batches:
        total += len(batch["cls"]) if isinstance(batch, dict) else len(batch[1])
    return total


def imagefolder_loader(root: Path, batch_size: int, workers: int) -> DataLoader:
    transform = transforms.Compose(
        [
            transforms.Resize(RESOLUTION, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(RESOLUTION),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--csv", help="write the table here too")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per process; the loaders scale with --workers

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        cfg = bench_config(Path(tmp), args.images, args.workers)
        root = paths.synthetic_root(cfg.out)
        gen_s, _ = timed(lambda: synthetic.write_dataset(cfg.data.synthetic, root))
        shard_s, n = timed(lambda: write_image_shards(cfg))
        write_random_latent_shards(cfg)
        b, w = args.batch_size, args.workers
        loaders = {
            "semtok loader (latents)": lambda: make_loader(
                cfg, "train", batch_size=b, features=("latents",), resample=False
            ),
            "semtok loader (images)": lambda: make_loader(
                cfg, "train", batch_size=b, features=(), images=True, resample=False
            ),
            "ImageFolder + PIL + transforms": lambda: imagefolder_loader(root, b, w),
        }
        rows = [
            {
                "stage": "synthetic generation (1 process)",
                "items": n,
                "seconds": gen_s,
                "vs_imagefolder": None,
            },
            {"stage": "shard writing (1 process)", "items": n, "seconds": shard_s, "vs_imagefolder": None},
        ]
        for name, build in loaders.items():
            loader = build()  # one-time setup (imports, VAE config) is not timed; worker start-up is
            seconds, count = timed(lambda loader=loader: count_samples(loader))
            rows.append(
                {"stage": f"{name}, {w} workers", "items": count, "seconds": seconds, "vs_imagefolder": 1.0}
            )

    for row in rows:
        row["per_second"] = row["items"] / row["seconds"]
    baseline = rows[-1]["per_second"]
    for row in rows:
        if row["vs_imagefolder"] is not None:
            row["vs_imagefolder"] = row["per_second"] / baseline
    print(f"{'stage':<48} {'items':>6} {'seconds':>8} {'items/s':>9} {'vs ImageFolder':>15}")
    for row in rows:
        ratio = f"{row['vs_imagefolder']:.2f}x" if row["vs_imagefolder"] else ""
        print(
            f"{row['stage']:<48} {row['items']:>6} {row['seconds']:>8.2f} {row['per_second']:>9.1f} {ratio:>15}"
        )
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
