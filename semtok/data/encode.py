"""Pre-encoding one image shard with a frozen network (SPEC §1).

    latents: the SD3.5 VAE's latent distribution mean (raw, NOT normalised: `(z - shift) * scale` is
             applied once, by the loader) of the image and of its horizontal flip, fp16:
             `latent.npy`, `latent_flip.npy` (C, h, w) — 16x32x32 for 256 px, 2 x 32 kB an image,
             ≈ 84 GB for ImageNet train.
    siglip:  SigLIP `last_hidden_state` (Ns, C), fp16, unflipped only (the loader mirrors the
             feature grid for flipped samples): `siglip.npy`. For so400m-patch16-256 that is
             256 x 1152 x 2 B = 590 kB an image, ≈ 0.76 TB for ImageNet train (1,281,167 images) and
             29 GB for val. Where that does not fit, set `data.precompute_siglip: false` and compute
             the features online with `encode_images_siglip` in the training job.

Output shards keep the input shard's keys, in the same order, plus `cls`, so the loader zips
image, latent and SigLIP shards sample by sample. The job runs under `semtok.cli.launch`;
`Accelerator` only chooses the device and mixed precision (bf16 on GPU per
`compute.mixed_precision`, fp32 on CPU). With several processes, each encodes a contiguous part of
the shard into `<output>.tmp.part<rank>` and the main process joins the parts in order; the output
appears (atomically) only when the whole shard is encoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from semtok import registry
from semtok.config import Config
from semtok.data.images import decode_rgb, to_model_range
from semtok.data.shards import Sample, decode_member, read_shard, write_shard
from semtok.models import vae
from semtok.utils.devices import job_device
from semtok.utils.io import npy_bytes
from semtok.utils.progress import progress

KINDS = ("latents", "siglip")


@torch.no_grad()
def encode_images_siglip(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """images: (B, 3, H, W) in [-1, 1] → SigLIP patch features `last_hidden_state` (B, Ns, C)."""
    pixels = registry.siglip_preprocess((images + 1.0) / 2.0, model)
    return model(pixel_values=pixels.to(model.dtype)).last_hidden_state


def _fp16(t: torch.Tensor) -> list[np.ndarray]:
    return list(t.to(torch.float16).cpu().numpy())


def feature_payloads(kind: str, model: nn.Module, images: torch.Tensor) -> list[dict[str, bytes]]:
    """images: (B, 3, H, W) in [-1, 1] → per image the npy members of shard kind `kind`."""
    if kind == "latents":
        mean, mean_flip = vae.encode_mean(model, torch.cat([images, images.flip(-1)])).chunk(2)
        return [
            {"latent.npy": npy_bytes(z), "latent_flip.npy": npy_bytes(zf)}
            for z, zf in zip(_fp16(mean), _fp16(mean_flip), strict=True)
        ]
    if kind == "siglip":
        return [{"siglip.npy": npy_bytes(f)} for f in _fp16(encode_images_siglip(model, images))]
    raise ValueError(f"unknown feature kind {kind!r}; known: {KINDS}")


def encode_samples(
    kind: str, model: nn.Module, samples: list[Sample], *, batch_size: int, accelerator: Any, desc: str
) -> Iterator[Sample]:
    """Image samples (`jpg`, `cls`) → feature samples with the same keys, in the same order."""
    starts = range(0, len(samples), batch_size)
    for start in progress(starts, desc=desc, unit="batch", disable=not accelerator.is_local_main_process):
        batch = samples[start : start + batch_size]
        images = to_model_range([decode_member(s, "jpg", decode_rgb) for s in batch]).to(accelerator.device)
        with accelerator.autocast():
            payloads = feature_payloads(kind, model, images)
        for sample, payload in zip(batch, payloads, strict=True):
            yield {"__key__": sample["__key__"], "cls": sample["cls"], **payload}


def in_key_order(samples: Iterable[Sample], keys: list[str], output: Path) -> Iterator[Sample]:
    """Pass `samples` through, failing (before the output is moved into place) unless their keys are `keys`."""
    for i, (sample, key) in enumerate(zip_longest(samples, keys)):
        if sample is None or key is None or sample["__key__"] != key:
            raise RuntimeError(f"{output}: sample {i} does not match the image shard's key {key!r}")
        yield sample


def load_encoder(cfg: Config, kind: str) -> nn.Module:
    return registry.load_vae(cfg) if kind == "latents" else registry.load_siglip(cfg)


def encode_shard(
    cfg: Config, kind: str, input_path: Path, output: Path, desc: str = "encode"
) -> dict[str, Any]:
    """Encode every sample of image shard `input_path` into feature shard `output`."""
    from accelerate import Accelerator

    gpu = job_device(cfg.compute).type == "cuda"
    accelerator = Accelerator(cpu=not gpu, mixed_precision=cfg.compute.mixed_precision)
    model = load_encoder(cfg, kind).to(accelerator.device)
    samples = list(read_shard(input_path))
    keys = [s["__key__"] for s in samples]
    batch_size = cfg.data.encode_batch_size
    if accelerator.num_processes == 1:
        encoded = encode_samples(
            kind, model, samples, batch_size=batch_size, accelerator=accelerator, desc=desc
        )
        write_shard(output, in_key_order(encoded, keys, output))
    else:
        part = output.with_name(f"{output.name}.tmp.part{accelerator.process_index}")
        with accelerator.split_between_processes(samples) as mine:
            write_shard(
                part,
                encode_samples(kind, model, mine, batch_size=batch_size, accelerator=accelerator, desc=desc),
            )
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            parts = [output.with_name(f"{output.name}.tmp.part{r}") for r in range(accelerator.num_processes)]
            write_shard(output, in_key_order((s for p in parts for s in read_shard(p)), keys, output))
            for p in parts:
                p.unlink()
        accelerator.wait_for_everyone()
    return {"kind": kind, "input": str(input_path), "output": str(output), "samples": len(samples)}
