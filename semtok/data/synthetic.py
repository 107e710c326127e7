"""The built-in class-conditional dataset, in ImageNet's folder layout.

Each class is one combination of a shape, a texture and a colour palette; every image draws its own
size (non-square, in [min_size, max_size]), background, position, scale and rotation. Class c takes
shape c mod S, texture c mod T and palette c mod P with S, T, P pairwise coprime, so the first
S·T·P classes are distinct combinations (Chinese remainder theorem) and neighbouring classes differ
in all three.

    DIR/train/n0000000c/n0000000c_<i>.JPEG
    DIR/val/n0000000c/ILSVRC2012_val_<n>.JPEG      (n interleaves the classes, as in ImageNet)
    DIR/LOC_synset_mapping.txt                     wnid and a description of each class

Every image has its own random generator seeded by (seed, split, class, i): the same seed gives
byte-identical files whatever the order of generation. The folder is written under a temporary name
and renamed into place, so a killed job never leaves a partial dataset.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from semtok.config import SyntheticConfig
from semtok.data.images import encode_jpeg
from semtok.utils.progress import progress

SHAPES = ("circle", "square", "triangle", "star", "ring", "stripes", "cross")
TEXTURES = ("noise", "gradient", "checker")
SOURCE_QUALITY = 92  # JPEG quality of the synthetic source files (the shards re-encode at data.jpeg_quality)
SPLIT_IDS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ClassSpec:
    wnid: str
    shape: str
    texture: str
    palette: int
    hue: float


def wnid(index: int) -> str:
    return f"n{index:08d}"


def num_palettes(num_classes: int) -> int:
    """Smallest palette count ≥ 5 (and ≥ the classes left per shape×texture) coprime with S·T."""
    count = max(5, math.ceil(num_classes / (len(SHAPES) * len(TEXTURES))))
    while math.gcd(count, len(SHAPES) * len(TEXTURES)) != 1:
        count += 1
    return count


def class_specs(num_classes: int) -> list[ClassSpec]:
    palettes = num_palettes(num_classes)
    golden = (math.sqrt(5) - 1) / 2
    return [
        ClassSpec(
            wnid=wnid(c),
            shape=SHAPES[c % len(SHAPES)],
            texture=TEXTURES[c % len(TEXTURES)],
            palette=c % palettes,
            hue=((c % palettes) * golden) % 1.0,
        )
        for c in range(num_classes)
    ]


def _rgb(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, sat, val), dtype=np.float32) * np.float32(255.0)


def _rotate(points: np.ndarray, theta: float) -> np.ndarray:
    """points: (N, 2) → rotated by theta about the origin."""
    c, s = math.cos(theta), math.sin(theta)
    return points @ np.array([[c, s], [-s, c]])


def _star(n: int, inner: float) -> np.ndarray:
    angles = np.arange(2 * n) * math.pi / n
    radii = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.sin(angles), -radii * np.cos(angles)], axis=1)


def _polygons(shape: str) -> list[np.ndarray]:
    """Outlines of a unit-radius shape centred on the origin (filled polygons)."""
    if shape == "square":
        return [_star(2, 1.0)]
    if shape == "triangle":
        return [_star(3, 1.0)[::2]]
    if shape == "star":
        return [_star(5, 0.42)]
    if shape == "cross":
        w = 0.3
        return [
            np.array(
                [
                    [-w, -1],
                    [w, -1],
                    [w, -w],
                    [1, -w],
                    [1, w],
                    [w, w],
                    [w, 1],
                    [-w, 1],
                    [-w, w],
                    [-1, w],
                    [-1, -w],
                    [-w, -w],
                ]
            )
        ]
    if shape == "stripes":
        return [np.array([[x, -1], [x + 0.28, -1], [x + 0.28, 1], [x, 1]]) for x in (-0.98, -0.42, 0.14, 0.7)]
    raise ValueError(f"not a polygon shape: {shape}")


def _mask(shape: str, size: tuple[int, int], centre: np.ndarray, radius: float, theta: float) -> np.ndarray:
    """(H, W) float mask in [0, 1] of the shape."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = centre
    if shape in ("circle", "ring"):
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
        if shape == "ring":
            r = 0.55 * radius
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=0)
    else:
        for poly in _polygons(shape):
            draw.polygon([tuple(p) for p in _rotate(poly * radius, theta) + centre], fill=255)
    return np.asarray(mask, dtype=np.float32) / 255.0


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def _texture(
    spec: ClassSpec, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, theta: float, radius: float
) -> np.ndarray:
    """xs: (1, W), ys: (H, 1) pixel coordinates → (H, W, 3) float32 foreground colours of the class texture."""
    hue = spec.hue + rng.uniform(-0.02, 0.02)
    primary = _rgb(hue, 0.85, rng.uniform(0.75, 1.0))
    secondary = _rgb(hue + 0.12, 0.6, rng.uniform(0.3, 0.5))
    u = np.float32(math.cos(theta)) * xs + np.float32(math.sin(theta)) * ys
    if spec.texture == "noise":
        return primary + _noise(rng, (ys.shape[0], xs.shape[1], 3), 28.0)
    if spec.texture == "gradient":
        t = ((u - u.min()) / max(float(np.ptp(u)), 1.0))[..., None]
        return primary + (secondary - primary) * t
    v = np.float32(-math.sin(theta)) * xs + np.float32(math.cos(theta)) * ys
    period = np.float32(max(3.0, radius / 3.0))
    checker = ((np.floor(u / period) + np.floor(v / period)) % 2)[..., None]
    return primary + (secondary - primary) * checker


def render(spec: ClassSpec, rng: np.random.Generator, cfg: SyntheticConfig) -> Image.Image:
    """One random RGB image of class `spec`."""
    width, height = (int(x) for x in rng.integers(cfg.min_size, cfg.max_size + 1, size=2))
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    phi = rng.uniform(0, 2 * math.pi)
    ramp = ((np.float32(math.cos(phi) / width) * xs + np.float32(math.sin(phi) / height) * ys + 1) / 2)[
        ..., None
    ]
    bg_a = _rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.1, 0.95))
    bg_b = _rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.1, 0.95))
    background = bg_a + (bg_b - bg_a) * ramp + _noise(rng, (height, width, 1), 6.0)

    short = min(width, height)
    radius = rng.uniform(0.25, 0.45) * short
    centre = np.array([rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)])
    theta = rng.uniform(0, 2 * math.pi)
    mask = _mask(spec.shape, (width, height), centre, radius, theta)[..., None]
    image = background + (_texture(spec, rng, xs, ys, theta, radius) - background) * mask
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")


def image_rng(seed: int, split: str, cls: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_IDS[split], cls, index])


def file_name(split: str, spec: ClassSpec, cls: int, index: int, num_classes: int) -> str:
    if split == "train":
        return f"{spec.wnid}/{spec.wnid}_{index}.JPEG"
    return f"{spec.wnid}/ILSVRC2012_val_{index * num_classes + cls + 1:08d}.JPEG"


def write_dataset(cfg: SyntheticConfig, output: Path) -> dict[str, Any]:
    """Write the whole dataset to `output` atomically; returns counts per split."""
    output = Path(output)
    specs = class_specs(cfg.num_classes)
    tmp = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"train": cfg.train_per_class, "val": cfg.val_per_class}
    try:
        for split, per_class in counts.items():
            for spec in specs:
                (tmp / split / spec.wnid).mkdir(parents=True)
            jobs = [(cls, i) for i in range(per_class) for cls in range(cfg.num_classes)]
            for cls, i in progress(jobs, desc=f"synthetic {split}", unit="img", mininterval=2.0):
                image = render(specs[cls], image_rng(cfg.seed, split, cls, i), cfg)
                name = file_name(split, specs[cls], cls, i, cfg.num_classes)
                (tmp / split / name).write_bytes(encode_jpeg(image, SOURCE_QUALITY))
        lines = [f"{s.wnid} {s.shape} {s.texture} palette-{s.palette}" for s in specs]
        (tmp / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
        _replace_dir(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "output": str(output),
        "classes": cfg.num_classes,
        **{s: n * cfg.num_classes for s, n in counts.items()},
    }


def _replace_dir(src: Path, dst: Path) -> None:
    """Move a finished folder into place, replacing an older one without ever leaving a half one."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        old = dst.parent / f".{dst.name}.old-{os.getpid()}"
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old)
    else:
        os.replace(src, dst)
