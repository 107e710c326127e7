"""Token shards (SPEC §3) and the in-memory token dataset the generator trains on.

`dump_shard` (the `dump-tokens` job): every train image of one shard and its horizontal flip, through
the frozen Stage II tokenizer, into a webdataset shard with the same keys: `bits.npy` / `bits_flip.npy` = the K×d bits packed little-endian into uint8
(K, ceil(d/8)) (576 bytes per image for d = 18, K = 256), and `cls`.

The generator's data is small (≈1.5 GB for ImageNet with flips), so `TokenDataset` holds it in
memory and draws every step's global batch from a generator seeded by (seed, segment): training is
fast, each rank takes its slice of the same global batch, and resume is exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semtok.config import Config
from semtok.data.loader import decode_sample, latent_normalisation
from semtok.data.shards import class_label, decode_member, npy_array, read_shard, write_shard
from semtok.models.factory import load_tokenizer
from semtok.utils.devices import job_device
from semtok.utils.io import npy_bytes
from semtok.utils.progress import progress


def pack_bits(bits: torch.Tensor) -> np.ndarray:
    """bits (..., d) bool → uint8 (..., ceil(d/8)), little-endian within and across bytes."""
    return np.packbits(bits.cpu().numpy().astype(np.uint8), axis=-1, bitorder="little")


def unpack_bits(packed: np.ndarray, d: int) -> np.ndarray:
    """uint8 (..., ceil(d/8)) → bool (..., d)."""
    return np.unpackbits(packed, axis=-1, count=d, bitorder="little").astype(bool)


@torch.no_grad()
def dump_shard(cfg: Config, variant: str, latent_tar: Path, output: Path, batch_size: int) -> dict[str, Any]:
    device = job_device(cfg.compute)
    tok = load_tokenizer(cfg, variant, device=device)
    norm = latent_normalisation(cfg)
    samples = list(read_shard(latent_tar))
    out: list[dict[str, Any]] = []
    for start in progress(range(0, len(samples), batch_size), desc=f"tokens {variant} {latent_tar.name}"):
        chunk = samples[start : start + batch_size]
        payload = {}
        for name, flipped in (("bits.npy", False), ("bits_flip.npy", True)):
            latents = torch.stack(
                [decode_sample(s, latent_norm=norm, flipped=flipped)["latent"] for s in chunk]
            )
            payload[name] = pack_bits(tok.encode_latents(latents).bits)
        for i, s in enumerate(chunk):
            out.append(
                {"__key__": s["__key__"], "cls": s["cls"]} | {k: npy_bytes(v[i]) for k, v in payload.items()}
            )
    write_shard(output, out)
    return {
        "variant": variant,
        "shard": str(output),
        "images": len(out),
        "bits": tok.bits,
        "tokens": tok.num_tokens,
    }


def read_token_shard(path: Path | str, bits: int) -> Iterator[dict[str, Any]]:
    """Samples of a token shard: key, cls, bits (K, d) bool, bits_flip (K, d) bool."""
    for s in read_shard(path):
        yield {
            "key": s["__key__"],
            "cls": decode_member(s, "cls", class_label),
            "bits": unpack_bits(decode_member(s, "bits.npy", npy_array), bits),
            "bits_flip": unpack_bits(decode_member(s, "bits_flip.npy", npy_array), bits),
        }


class TokenDataset:
    """All token shards of a tokenizer variant in memory (packed)."""

    def __init__(self, shards: Sequence[Path | str], bits: int) -> None:
        packed, flips, labels = [], [], []
        for path in shards:
            for s in read_shard(path):
                packed.append(decode_member(s, "bits.npy", npy_array))
                flips.append(decode_member(s, "bits_flip.npy", npy_array))
                labels.append(decode_member(s, "cls", class_label))
        if not packed:
            raise ValueError(f"no tokens in {len(shards)} shard(s): {list(shards)[:3]}")
        self.bits = bits
        self.packed = np.stack([np.stack(packed), np.stack(flips)], axis=1)  # (N, 2, K, nbytes)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_tokens(self) -> int:
        return self.packed.shape[2]

    def batches(
        self, batch_size: int, seed: int, rank: int = 0, world: int = 1, flip: bool = True
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches; the global batch of each step is the same on every rank, which takes
        rows [rank·b, (rank+1)·b) of it (b = batch_size // world)."""
        rng = np.random.default_rng(seed)
        per_rank = batch_size // world
        while True:
            idx = rng.integers(0, len(self), size=batch_size)
            side = rng.integers(0, 2, size=batch_size) if flip else np.zeros(batch_size, dtype=np.int64)
            mine = slice(rank * per_rank, (rank + 1) * per_rank)
            bits = unpack_bits(self.packed[idx[mine], side[mine]], self.bits)
            yield {"bits": torch.from_numpy(bits), "cls": torch.from_numpy(self.labels[idx[mine]])}
