"""Batches for training and evaluation from the shard sets of a split (SPEC §1).

Shard sets share keys and shard boundaries (image, latents, SigLIP), so the pipeline works on shard
*names*: a webdataset shard source (`SimpleShardList` split by node and worker, or
`ResampledShards` for infinite multi-node training) yields names, each name opens the tar of every
requested set, and their samples are zipped by key (a mismatch raises, naming both shards). Then:
per-worker shuffle buffer (`data.shuffle_buffer`), decoding, horizontal flip, batching.

Flip (the only augmentation): with probability 0.5 (seeded per rank and worker) a sample takes the
stored flipped latent, the mirrored SigLIP grid and the mirrored image; `flip` in the batch says which.

Latent normalisation: latents are stored raw; the loader applies `(z - shift) * scale` exactly once.
The factors come from the VAE's config (`AutoencoderKL.load_config` of the configured VAE, the same
source `registry.vae_normalisation` reads from the loaded model), so they can never disagree with
the VAE that later decodes.

Corrupt shards: with `data.on_corrupt_shard: fail` the job stops with an error naming the shard;
with `skip` the shard is skipped with a warning and recorded in `ShardLoader.skipped_shards` (a
shard's samples read before the damage are kept).
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from itertools import pairwise, zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from semtok import paths, registry
from semtok.config import Config
from semtok.data.images import decode_rgb, to_model_range
from semtok.data.shards import CorruptShardError, Sample, read_shard

FEATURES = ("latents", "siglip")
SKIPPED = "__skipped_shard__"  # marker sample: a corrupt shard skipped in "skip" mode


def latent_normalisation(cfg: Config) -> tuple[float, float]:
    """(shift, scale) of the configured VAE, read from its config without loading the weights."""
    return registry.vae_normalisation(registry.vae_config(cfg))


# ---------------------------------------------------------------------------------------------
# Decoding (shared by the loader and iterate_shard)


def _npy(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))


def flip_grid(features: torch.Tensor) -> torch.Tensor:
    """features: (Ns, C) on a square g x g patch grid → the grid mirrored left-right, (Ns, C)."""
    g = math.isqrt(features.shape[0])
    if g * g != features.shape[0]:
        raise ValueError(f"cannot mirror {features.shape[0]} SigLIP tokens: not a square grid")
    return features.reshape(g, g, -1).flip(1).reshape(g * g, -1)


def decode_sample(
    sample: Sample, *, latent_norm: tuple[float, float] | None, flipped: bool
) -> dict[str, Any]:
    """Raw shard members → {"key", "cls", "flip", and whichever of "latent" (C, h, w) normalised,
    "siglip" (Ns, C), "image" (3, H, W) in [-1, 1] the sample has}, all float32."""
    out: dict[str, Any] = {"key": sample["__key__"], "cls": int(sample["cls"]), "flip": flipped}
    if "latent.npy" in sample:
        if latent_norm is None:
            raise ValueError("latent shards need latent_norm=latent_normalisation(cfg)")
        shift, scale = latent_norm
        out["latent"] = (_npy(sample["latent_flip.npy" if flipped else "latent.npy"]) - shift) * scale
    if "siglip.npy" in sample:
        features = _npy(sample["siglip.npy"])
        out["siglip"] = flip_grid(features) if flipped else features
    if "jpg" in sample:
        image = to_model_range([decode_rgb(sample["jpg"])])[0]
        out["image"] = image.flip(-1) if flipped else image
    return out


def collate(samples: list[dict[str, Any]], skipped: list[str]) -> dict[str, Any]:
    """Decoded samples → {"key": list, "cls": (B,) int64, "flip": (B,) bool, tensors stacked (B, ...),
    "skipped_shards": list}."""
    batch: dict[str, Any] = {
        "key": [s["key"] for s in samples],
        "cls": torch.tensor([s["cls"] for s in samples], dtype=torch.int64),
        "flip": torch.tensor([s["flip"] for s in samples], dtype=torch.bool),
        "skipped_shards": skipped,
    }
    for name in ("latent", "siglip", "image"):
        if samples and name in samples[0]:
            batch[name] = torch.stack([s[name] for s in samples])
    return batch


def iterate_shard(
    path: Path | str, *, latent_norm: tuple[float, float] | None = None
) -> Iterator[dict[str, Any]]:
    """Decoded samples of one shard in file (key) order, unflipped and unshuffled (for evaluation)."""
    for sample in read_shard(path):
        yield decode_sample(sample, latent_norm=latent_norm, flipped=False)


# ---------------------------------------------------------------------------------------------
# Pipeline stages (functions of an iterator, bound with functools.partial so workers can pickle them)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from ints and strings that is the same in every process (webdataset's
    `make_seed` uses `hash()`, which Python randomises per process for strings)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _worker_rng(seed: int, *tags: Any) -> random.Random:
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    return random.Random(stable_seed(seed, rank, worker, *tags))


def _zip_sets(
    names: Iterable[dict[str, str]], *, set_paths: dict[str, dict[str, Path]], on_corrupt: str
) -> Iterator[Sample]:
    """Shard names → merged samples of every set, checked key by key."""
    for item in names:
        shard = set_paths[item["url"]]
        try:
            for parts in zip_longest(*(read_shard(p) for p in shard.values())):
                keys = [p["__key__"] if p is not None else "<end of shard>" for p in parts]
                for (path_a, key_a), (path_b, key_b) in pairwise(zip(shard.values(), keys, strict=True)):
                    if key_a != key_b:
                        raise ValueError(
                            f"shard sets are not aligned: {key_a!r} in {path_a} but {key_b!r} in {path_b}"
                        )
                merged: Sample = {}
                for part in parts:
                    merged.update(part)
                yield merged
        except CorruptShardError as err:
            if on_corrupt == "fail":
                raise
            warnings.warn(f"skipping corrupt shard (data.on_corrupt_shard=skip): {err}", stacklevel=1)
            yield {SKIPPED: str(err.path)}


def _shuffle(samples: Iterator[Sample], *, bufsize: int, seed: int) -> Iterator[Sample]:
    return wds.shuffle(bufsize, bufsize, rng=_worker_rng(seed, "shuffle"))(samples)


def _decode(samples: Iterable[Sample], *, latent_norm: tuple[float, float] | None, flip: bool, seed: int):
    rng = _worker_rng(seed, "flip")
    for sample in samples:
        if SKIPPED in sample:
            yield sample
        else:
            yield decode_sample(sample, latent_norm=latent_norm, flipped=flip and rng.random() < 0.5)


def _batch(
    samples: Iterable[dict[str, Any]], *, batch_size: int, partial_last: bool
) -> Iterator[dict[str, Any]]:
    batch: list[dict[str, Any]] = []
    skipped: list[str] = []
    for sample in samples:
        if SKIPPED in sample:
            skipped.append(sample[SKIPPED])
            continue
        batch.append(sample)
        if len(batch) == batch_size:
            yield collate(batch, skipped)
            batch, skipped = [], []
    if (batch and partial_last) or skipped:
        yield collate(batch if partial_last else [], skipped)


# ---------------------------------------------------------------------------------------------


class ShardLoader:
    """An iterable of batches (see `make_loader`); `skipped_shards` lists corrupt shards skipped so far."""

    def __init__(
        self,
        set_paths: dict[str, dict[str, Path]],
        *,
        batch_size: int,
        latent_norm: tuple[float, float] | None,
        shuffle: bool,
        flip: bool,
        resample: bool,
        epochs: int | None,
        seed: int,
        num_workers: int,
        shuffle_buffer: int,
        on_corrupt: str,
    ) -> None:
        self.set_paths = set_paths
        self.batch_size = batch_size
        self.latent_norm = latent_norm
        self.shuffle, self.flip, self.resample = shuffle, flip, resample
        self.epochs, self.seed = epochs, seed
        self.num_workers, self.shuffle_buffer, self.on_corrupt = num_workers, shuffle_buffer, on_corrupt
        self.skipped_shards: list[str] = []
        self._passes = 0  # iterations started; each pass draws new shard orders, shuffles and flips

    def _pipeline(self, epoch: int) -> wds.DataPipeline:
        names = list(self.set_paths)
        seed = stable_seed(self.seed, epoch) & 0x7FFFFFFF
        if self.resample:
            _, world, _, _ = wds.utils.pytorch_worker_info()
            per_worker = (
                sys.maxsize
                if self.epochs is None
                else math.ceil(self.epochs * len(names) / (world * max(1, self.num_workers)))
            )
            stages: list[Any] = [
                wds.ResampledShards(names, nshards=per_worker, seed=seed, deterministic=True)
            ]
        else:
            stages = [
                wds.SimpleShardList(names, seed=seed if self.shuffle else None),
                wds.split_by_node,
                wds.split_by_worker,
            ]
        stages.append(partial(_zip_sets, set_paths=self.set_paths, on_corrupt=self.on_corrupt))
        if self.shuffle:
            stages.append(partial(_shuffle, bufsize=self.shuffle_buffer, seed=seed))
        stages.append(partial(_decode, latent_norm=self.latent_norm, flip=self.flip, seed=seed))
        stages.append(partial(_batch, batch_size=self.batch_size, partial_last=not self.resample))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epochs = 1 if self.resample or self.epochs is None else self.epochs
        for _ in range(epochs):
            loader = DataLoader(
                self._pipeline(self._passes),
                batch_size=None,
                num_workers=self.num_workers,
                pin_memory=torch.cuda.is_available(),
                # its own generator: starting to iterate must not draw from the global RNG, which the
                # training loop restores on resume (mid-segment resume would shift the model's noise)
                generator=torch.Generator().manual_seed(self.seed),
            )
            self._passes += 1
            for batch in loader:
                skipped = batch.pop("skipped_shards")
                if skipped:
                    self.skipped_shards += skipped
                    warnings.warn(
                        f"{len(self.skipped_shards)} corrupt shard(s) skipped so far: {skipped}", stacklevel=2
                    )
                if batch["key"]:
                    yield batch


def shard_sets(cfg: Config, split: str, sets: Sequence[str]) -> dict[str, dict[str, Path]]:
    """{shard name: {set: tar path}} for every shard of `split`; raises if any tar is missing."""
    count = {"train": cfg.data.train_shards, "val": cfg.data.val_shards}[split]

    def tar(kind: str, i: int) -> Path:
        return (
            paths.image_shard(cfg.out, split, i)
            if kind == "images"
            else paths.feature_shard(cfg.out, kind, split, i)
        )

    table = {paths.shard_name(split, i): {kind: tar(kind, i) for kind in sets} for i in range(count)}
    missing = [str(p) for shard in table.values() for p in shard.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} shards of {split} are missing (run the data/encode rules), e.g. {missing[:3]}"
        )
    return table


def make_loader(
    cfg: Config,
    split: str,
    *,
    batch_size: int,
    features: Sequence[str] = FEATURES,
    shuffle: bool = True,
    flip: bool = True,
    resample: bool = True,
    epochs: int | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    images: bool = False,
) -> ShardLoader:
    """Batches of `split` (per process: the global batch is batch_size x processes).

    Each batch is a dict: "key" (list of B str), "cls" (B,) int64, "flip" (B,) bool, and per request
    "latent" (B, C, h, w) float32 normalised, "siglip" (B, Ns, C) float32, "image" (B, 3, H, W) in [-1, 1].

    features: pre-encoded sets to read ("latents", "siglip"); with `data.precompute_siglip: false`
        request images=True and compute SigLIP online with `semtok.data.encode.encode_images_siglip`.
    resample: True = draw shards with replacement (infinite unless `epochs`, each node and worker
        independently: the multi-node training mode; incomplete last batches are dropped);
        False = each node and worker reads its share of the shards once per epoch (`epochs`, default 1),
        keeping the last incomplete batch.
    shuffle: shuffle shard order and samples (buffer `data.shuffle_buffer`); False reads shards in order
        and samples in key order (with one worker: a deterministic order for evaluation).
    """
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}; known: {FEATURES}")
    if "siglip" in features and not cfg.data.precompute_siglip:
        raise ValueError(
            "data.precompute_siglip is false: no SigLIP shards; request images=True and compute the "
            "features online with semtok.data.encode.encode_images_siglip"
        )
    sets = (["images"] if images else []) + list(features)
    if not sets:
        raise ValueError("nothing to load: request features and/or images=True")
    return ShardLoader(
        shard_sets(cfg, split, sets),
        batch_size=batch_size,
        latent_norm=latent_normalisation(cfg) if "latents" in features else None,
        shuffle=shuffle,
        flip=flip,
        resample=resample,
        epochs=epochs,
        seed=seed,
        num_workers=cfg.compute.num_workers if num_workers is None else num_workers,
        shuffle_buffer=cfg.data.shuffle_buffer,
        on_corrupt=cfg.data.on_corrupt_shard,
    )
