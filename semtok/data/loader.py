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
source `semtok.models.vae.normalisation` reads from the loaded model), so they can never disagree with
the VAE that later decodes.

Corrupt data: a shard that cannot be read to its end, or a sample member that cannot be decoded (bit
rot, a damaged .npy header, non-finite values), raises CorruptShardError / CorruptSampleError naming
the shard, the key and the member. With `data.on_corrupt_shard: fail` the job stops with it; with
`skip` the shard (its samples read before the damage are kept) or the sample is skipped and recorded
where it is found (`SkipRecorder`, in the DataLoader worker or the process that read it): a warning in
the job's log and one JSON line per skip (time, command, shard, key, reason, the running count of the
process that found it) appended to `metrics/data/skipped-{split}.jsonl` of the run
(`paths.skipped_record`). Recording there, not where the batches arrive, keeps every skip: the shuffle
buffer and the workers' prefetch read ahead, and what they hold when a training segment's iterator
closes never arrives. A marker still travels with the batches to the main process, which lists the
skips it received (`ShardLoader.skipped_shards` / `skipped_samples`) and stops a loader that meets
nothing but corrupt shards.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import sys
import time
import warnings
from collections import Counter
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
from semtok.data.shards import (
    CorruptSampleError,
    CorruptShardError,
    Sample,
    class_label,
    decode_member,
    npy_array,
    read_shard,
)
from semtok.models import vae
from semtok.utils.process import CHECKPOINT_SIGNALS, die_with_parent

FEATURES = ("latents", "siglip")
SKIPPED = "__skipped__"  # marker sample: a corrupt shard or sample skipped in "skip" mode


def latent_normalisation(cfg: Config) -> tuple[float, float]:
    """(shift, scale) of the configured VAE, read from its config without loading the weights."""
    return vae.normalisation(registry.vae_config(cfg))


# ---------------------------------------------------------------------------------------------
# Decoding (shared by the loader and iterate_shard)


def _npy(sample: Sample, member: str) -> torch.Tensor:
    return torch.from_numpy(decode_member(sample, member, npy_array).astype(np.float32))


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
    "siglip" (Ns, C), "image" (3, H, W) in [-1, 1] the sample has}, all float32. A member that cannot
    be decoded raises CorruptSampleError naming the shard, the key and the member."""
    cls = decode_member(sample, "cls", class_label)
    out: dict[str, Any] = {"key": sample["__key__"], "cls": cls, "flip": flipped}
    if "latent.npy" in sample:
        if latent_norm is None:
            raise ValueError("latent shards need latent_norm=latent_normalisation(cfg)")
        shift, scale = latent_norm
        out["latent"] = vae.normalise(
            _npy(sample, "latent_flip.npy" if flipped else "latent.npy"), shift, scale
        )
    if "siglip.npy" in sample:
        features = _npy(sample, "siglip.npy")
        out["siglip"] = flip_grid(features) if flipped else features
    if "jpg" in sample:
        image = to_model_range([decode_member(sample, "jpg", decode_rgb)])[0]
        out["image"] = image.flip(-1) if flipped else image
    return out


def collate(samples: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
    """Decoded samples → {"key": list, "cls": (B,) int64, "flip": (B,) bool, tensors stacked (B, ...),
    "skipped": the skip events since the last batch}."""
    batch: dict[str, Any] = {
        "key": [s["key"] for s in samples],
        "cls": torch.tensor([s["cls"] for s in samples], dtype=torch.int64),
        "flip": torch.tensor([s["flip"] for s in samples], dtype=torch.bool),
        "skipped": skipped,
    }
    for name in ("latent", "siglip", "image"):
        if samples and name in samples[0]:
            shapes = Counter(tuple(s[name].shape) for s in samples)
            if len(shapes) > 1:
                odd = [s["key"] for s in samples if tuple(s[name].shape) != shapes.most_common(1)[0][0]]
                raise ValueError(
                    f"{name} of samples {odd[:5]} differs in shape from the batch's: {dict(shapes)}"
                )
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


class SkipRecorder:
    """Records each skip where it is found: a warning (stderr: the job's log) and a JSON line in `path`
    (None: the warning only). `count` is this process's running count of skips."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.count = path, 0

    def __call__(self, err: CorruptShardError) -> dict[str, Any]:
        """Record the skip of `err`; returns its event (shard, key, reason) for the marker."""
        event = skip_event(err)
        self.count += 1
        what = "shard" if event["key"] is None else "sample"
        warnings.warn(
            f"skipped corrupt {what} ({self.count} skip(s) so far in process {os.getpid()}; "
            f"data.on_corrupt_shard=skip): {event['reason']}",
            stacklevel=3,
        )
        if self.path is not None:
            line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv), **event}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, (json.dumps(line | {"count": self.count}) + "\n").encode())
            finally:
                os.close(fd)
        return event


def _zip_sets(
    names: Iterable[dict[str, str]],
    *,
    set_paths: dict[str, dict[str, Path]],
    on_corrupt: str,
    recorder: SkipRecorder,
) -> Iterator[Sample]:
    """Shard names → merged samples of every set, checked key by key; `__url__` maps each member to
    its shard."""
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
                merged["__url__"] = {m: p["__url__"] for p in parts for m in p if not m.startswith("__")}
                yield merged
        except CorruptShardError as err:
            if on_corrupt == "fail":
                raise
            yield {SKIPPED: recorder(err)}


def skip_event(err: CorruptShardError) -> dict[str, Any]:
    """What a skip record holds: the shard, the key (None when the whole rest of the shard is lost)
    and the reason."""
    return {"shard": str(err.path), "key": getattr(err, "key", None), "reason": str(err)}


def _shuffle(samples: Iterator[Sample], *, bufsize: int, seed: int) -> Iterator[Sample]:
    return wds.shuffle(bufsize, bufsize, rng=_worker_rng(seed, "shuffle"))(samples)


def _decode(
    samples: Iterable[Sample],
    *,
    latent_norm: tuple[float, float] | None,
    flip: bool,
    seed: int,
    on_corrupt: str,
    recorder: SkipRecorder,
):
    rng = _worker_rng(seed, "flip")
    for sample in samples:
        if SKIPPED in sample:
            yield sample
            continue
        flipped = flip and rng.random() < 0.5
        try:
            yield decode_sample(sample, latent_norm=latent_norm, flipped=flipped)
        except CorruptSampleError as err:
            if on_corrupt == "fail":
                raise
            yield {SKIPPED: recorder(err)}


def _batch(
    samples: Iterable[dict[str, Any]], *, batch_size: int, partial_last: bool
) -> Iterator[dict[str, Any]]:
    """Decoded samples → batches; a skip event is passed on at once, as a batch without samples."""
    batch: list[dict[str, Any]] = []
    for sample in samples:
        if SKIPPED in sample:
            yield collate([], [sample[SKIPPED]])
            continue
        batch.append(sample)
        if len(batch) == batch_size:
            yield collate(batch, [])
            batch = []
    if batch and partial_last:
        yield collate(batch, [])


def _worker_init(_worker_id: int, *, parent: int) -> None:
    """In each DataLoader worker: only the main process acts on the checkpoint signals (Slurm signals
    the whole process group; a worker killed by it would fail the job instead of letting it
    checkpoint), and a worker dies with its main process."""
    for signum in CHECKPOINT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL, parent)


# ---------------------------------------------------------------------------------------------


class ShardLoader:
    """An iterable of batches (see `make_loader`). Every skip is warned and appended to `record` (JSON
    lines) where it is found; `skipped_shards` lists the corrupt shards and `skipped_samples` the
    (shard, key) of corrupt samples whose markers reached this process (not those a shuffle buffer or a
    worker's prefetch held when an iteration was closed)."""

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
        record: Path | None = None,
    ) -> None:
        self.set_paths = set_paths
        self.batch_size = batch_size
        self.latent_norm = latent_norm
        self.shuffle, self.flip, self.resample = shuffle, flip, resample
        self.epochs, self.seed = epochs, seed
        self.num_workers, self.shuffle_buffer, self.on_corrupt = num_workers, shuffle_buffer, on_corrupt
        self.recorder = SkipRecorder(record)
        self.skipped_shards: list[str] = []
        self.skipped_samples: list[tuple[str, str]] = []
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
        stages.append(
            partial(_zip_sets, set_paths=self.set_paths, on_corrupt=self.on_corrupt, recorder=self.recorder)
        )
        if self.shuffle:
            stages.append(partial(_shuffle, bufsize=self.shuffle_buffer, seed=seed))
        stages.append(
            partial(
                _decode,
                latent_norm=self.latent_norm,
                flip=self.flip,
                seed=seed,
                on_corrupt=self.on_corrupt,
                recorder=self.recorder,
            )
        )
        stages.append(partial(_batch, batch_size=self.batch_size, partial_last=not self.resample))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epochs = 1 if self.resample or self.epochs is None else self.epochs
        for _ in range(epochs):
            # Its own generator: creating the iterator draws the workers' base seed from it, not from
            # the global RNG the training step uses (a resumed run creates it at another step).
            loader = DataLoader(
                self._pipeline(self._passes),
                batch_size=None,
                num_workers=self.num_workers,
                pin_memory=torch.cuda.is_available(),
                generator=torch.Generator().manual_seed(stable_seed(self.seed, self._passes, "loader")),
                worker_init_fn=partial(_worker_init, parent=os.getpid()),
            )
            self._passes += 1
            lost = 0  # whole shards skipped since the last batch
            for batch in loader:
                for event in batch.pop("skipped"):
                    self._skipped(event)
                    lost += event["key"] is None
                if batch["key"]:
                    lost = 0
                    yield batch
                elif lost > 2 * len(self.set_paths):
                    raise CorruptShardError(
                        f"{len(self.set_paths)} shards",
                        f"{lost} corrupt shards in a row and no sample (every shard corrupt?)",
                    )

    def _skipped(self, event: dict[str, Any]) -> None:
        """List a skip whose marker arrived (it was warned and recorded where it was found)."""
        if event["key"] is None:
            self.skipped_shards.append(event["shard"])
        else:
            self.skipped_samples.append((event["shard"], event["key"]))


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
        record=paths.skipped_record(cfg.out, split),
    )
