"""Reconstruction metrics (SPEC §5), computed by the `eval-recon` job (semtok/jobs/evaluation.py) for a
tokenizer variant decoded by its refiner or its flow sampler, or for the frozen VAE alone.

Validation images (the first `evaluation.recon_images`, key order) → pre-encoded latents → tokens →
decoder (one-step refiner of Stage II, or Stage I's flow sampler) → VAE → uint8. Mode `vae` skips the
tokenizer: the frozen VAE alone decodes the latents it encoded, the ceiling every tokenizer is
measured against (CSV variant `vae`, setting `frozen`). Metrics: rFID (reconstructions vs the same
validation images, the configured extractor), PSNR and SSIM on uint8 RGB per image then averaged,
LPIPS (the metric network of the registry, AlexNet by convention), `class_acc` (the frozen
classifier's accuracy on the reconstructions against the images' true labels), bits per pixel
(d·K/(H·W); for the VAE, its fp16 latent: 16·C·h·w/(H·W)) and, for tokenizers, codebook usage and
the silhouette of the mean-pooled encoder features by class (Fig. 6's clustering as a number). A
tokenizer's image metrics record how its codes were decoded (`decoding_fields`: the decoder's steps,
1 for the refiner, and the flow sampler's shift), so that a flow row run with 10 Euler steps is never
compared with the paper's 25. Also writes reconstruction examples (Fig. 3, Table 7 visual) and, in
refiner mode, the mean-pooled encoder features of Fig. 6.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from semtok import registry
from semtok.config import Config
from semtok.data.imagenet import num_classes
from semtok.data.images import to_uint8
from semtok.eval.features import extract_features, top1_accuracy
from semtok.eval.metrics import frechet_distance, lpips_distance, psnr_uint8, ssim_uint8, stats_from_features
from semtok.eval.records import PSNR_DEFINITION, SSIM_DEFINITION, protocol
from semtok.eval.reference import (
    data_tag,
    fid_setup,
    load_reference,
    on_device,
    val_batches,
    validation_images,
)
from semtok.models import vae
from semtok.utils.progress import progress

MODES = ("refiner", "diffusion", "vae")
LATENT_BITS = 16  # the VAE latents are stored and decoded as fp16


@dataclass
class Reconstructions:
    """original, recon: (N, H, W, 3) uint8; labels: (N,) true classes; for tokenizers, pooled: (N, width)
    mean-pooled encoder features, indices: every token's code index, entropy: the quantizer's
    (per-sample, codebook) soft entropy in nats, batch values averaged over the images."""

    original: np.ndarray
    recon: np.ndarray
    labels: np.ndarray
    pooled: np.ndarray | None = None
    indices: torch.Tensor | None = None
    entropy: tuple[float, float] | None = None


class Decoded(NamedTuple):
    """One batch through a decoder: images (B, 3, H, W) in [-1, 1]; for tokenizers, pooled (B, width)
    encoder features, indices (B, K) and the quantizer's (per-sample, codebook) entropy of the batch."""

    images: torch.Tensor
    pooled: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    entropy: tuple[torch.Tensor, torch.Tensor] | None = None


Decode = Callable[[torch.Tensor], Decoded]


def reconstruct(cfg: Config, decode: Decode, device: torch.device) -> Reconstructions:
    """Run `decode` (normalised latents (B, C, h, w) → `Decoded`) over the validation batches, with a
    progress bar (the decoding is the slowest part of every evaluation)."""
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=cfg.compute.mixed_precision == "bf16"
    )
    parts: dict[str, list[Any]] = {
        k: [] for k in ("original", "recon", "labels", "pooled", "indices", "entropy")
    }
    batches = val_batches(cfg, cfg.evaluation.batch_size, features=("latents",))
    with progress(total=validation_images(cfg), unit="img", desc="reconstruct") as bar:
        for batch in batches:
            with torch.no_grad(), autocast:
                out = decode(batch["latent"].to(device))
            n = len(batch["cls"])
            parts["original"].append(to_uint8((batch["image"] + 1) / 2))
            parts["recon"].append(to_uint8((out.images.float().cpu() + 1) / 2))
            parts["labels"].append(batch["cls"].numpy())
            if out.pooled is not None:
                parts["pooled"].append(out.pooled.float().cpu().numpy())
                parts["indices"].append(out.indices.cpu())
                parts["entropy"].append([n * float(h) for h in out.entropy])
            bar.update(n)
    labels = np.concatenate(parts["labels"])
    entropy = tuple(np.sum(parts["entropy"], axis=0) / len(labels)) if parts["entropy"] else None
    return Reconstructions(
        original=np.concatenate(parts["original"]),
        recon=np.concatenate(parts["recon"]),
        labels=labels,
        pooled=np.concatenate(parts["pooled"]) if parts["pooled"] else None,
        indices=torch.cat(parts["indices"]) if parts["indices"] else None,
        entropy=entropy,
    )


def tokenizer_decoder(cfg: Config, variant: str, mode: str, device: torch.device) -> tuple[Decode, Any]:
    """Decode through tokenizer `variant`: Stage II's refiner, or Stage I's flow sampler."""
    from semtok.models.factory import load_tokenizer

    tok = load_tokenizer(cfg, variant, "stage2" if mode == "refiner" else "stage1", device)
    t = cfg.tokenizer_variant(variant)
    sampler = t.sampler
    gen = torch.Generator().manual_seed(cfg.variant_seed(t))

    def to_latents(codes: torch.Tensor) -> torch.Tensor:
        if mode == "refiner":
            return tok.refine_latents(codes)
        return tok.flow_latents(codes, sampler.steps, sampler.shift, gen)

    def decode(latents: torch.Tensor) -> Decoded:
        enc, q = tok.quantize(latents)
        recon = tok.latents_to_pixels(to_latents(q.codes))
        return Decoded(
            recon, enc.features.float().mean(1), q.indices, (q.per_sample_entropy, q.codebook_entropy)
        )

    return decode, tok


def vae_decoder(cfg: Config, device: torch.device) -> Decode:
    """Decode the stored latents with the frozen VAE alone (its encode → decode)."""
    from semtok.data.loader import latent_normalisation

    frozen = registry.load_vae(cfg).to(device)
    shift, scale = latent_normalisation(cfg)

    def decode(latents: torch.Tensor) -> Decoded:
        return Decoded(vae.decode(frozen, latents, shift, scale))

    return decode


def decoding_fields(cfg: Config, variant: str, mode: str) -> dict[str, object]:
    """Protocol fields of how tokenizer `variant` decoded in `mode`: `steps`, the decoder's forward
    passes (1 for the one-step refiner, the Euler steps of the flow sampler), and the flow sampler's
    `shift`."""
    if mode == "refiner":
        return {"steps": 1}
    if mode == "diffusion":
        sampler = cfg.tokenizer_variant(variant).sampler
        return {"steps": sampler.steps, "shift": sampler.shift}
    raise ValueError(f"mode {mode!r} decodes no tokens; expected 'refiner' or 'diffusion'")


def image_metrics(
    cfg: Config,
    rec: Reconstructions,
    reference: Path,
    device: torch.device,
    decoding: dict[str, object] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """rFID, PSNR, SSIM, LPIPS and class_acc of reconstructions, with their protocols; `decoding`
    (`decoding_fields`, tokenizers only) is added to each protocol."""
    setup = fid_setup(cfg)
    ref = load_reference(reference)
    n = len(rec.original)
    if ref.protocol != setup.protocol or len(ref.val_fid) != n:
        raise RuntimeError(
            f"{reference} was made with {ref.protocol} on {len(ref.val_fid)} images; this evaluation uses "
            f"{setup.protocol} on {n}: rerun `semtok eval-reference`"
        )
    feats = extract_features(setup.extractor, rec.recon, batch_size=cfg.evaluation.batch_size)
    lpips_net = registry.load_lpips_metric(cfg).to(device)
    classifier = on_device(cfg, registry.load_accuracy_classifier(cfg))
    values = {
        "rFID": frechet_distance(
            stats_from_features(feats[setup.feature_names["fid"]]), stats_from_features(ref.val_fid)
        ),
        "PSNR": psnr_uint8(rec.original, rec.recon),
        "SSIM": ssim_uint8(rec.original, rec.recon),
        "LPIPS": lpips_distance(lpips_net, rec.original, rec.recon, batch_size=cfg.evaluation.batch_size),
        "class_acc": top1_accuracy(classifier, rec.recon, rec.labels, cfg.evaluation.batch_size),
    }
    data = data_tag(cfg)
    how = decoding or {}
    protocols = {
        "rFID": protocol(fid=setup.protocol, ref=f"val-images({n})", data=data, n=n, **how),
        "PSNR": protocol(definition=PSNR_DEFINITION, data=data, n=n, **how),
        "SSIM": protocol(definition=SSIM_DEFINITION, data=data, n=n, **how),
        "LPIPS": protocol(net=registry.lpips_metric_protocol(cfg), data=data, n=n, **how),
        "class_acc": protocol(
            classifier=classifier.protocol, labels="true", classes=num_classes(cfg), data=data, n=n, **how
        ),
    }
    return values, protocols


def code_metrics(cfg: Config, tok: Any, rec: Reconstructions) -> tuple[dict[str, float], dict[str, str]]:
    """Bits per pixel d·K/(H·W), the fraction of the codebook used, the quantizer's soft entropies
    (`entropy_per_sample`, `entropy_codebook`: nats, of batches of `evaluation.batch_size` images, at
    most d·ln 2; the terms of L_quant) and `feature_silhouette`: scikit-learn's silhouette score
    (Euclidean) of the first `evaluation.tsne_images` mean-pooled encoder features grouped by class —
    the features Fig. 6's t-SNE shows; higher = tighter classes. The silhouette is left out where it is
    undefined (fewer than 2 classes, or no class with 2 images)."""
    from sklearn.metrics import silhouette_score

    h, w = rec.original.shape[1:3]
    indices = rec.indices
    n = len(rec.original)
    entropy = protocol(
        definition="soft-quantizer-entropy-nats", tau=tok.quantizer.tau, batch=cfg.evaluation.batch_size, n=n
    )
    values = {
        "bpp": tok.bits * tok.num_tokens / float(h * w),
        "codebook_usage": float(indices.unique().numel()) / min(indices.numel(), 2**tok.bits),
        "entropy_per_sample": rec.entropy[0],
        "entropy_codebook": rec.entropy[1],
    }
    protocols = {
        "bpp": protocol(definition="bits*tokens/(H*W)"),
        "codebook_usage": protocol(definition="distinct-indices/min(tokens,2^d)", n=n),
        "entropy_per_sample": entropy,
        "entropy_codebook": entropy,
    }
    m = min(cfg.evaluation.tsne_images, len(rec.labels))
    classes = len(np.unique(rec.labels[:m]))
    if 2 <= classes < m:
        features, labels = rec.pooled[:m], rec.labels[:m]
        values["feature_silhouette"] = float(silhouette_score(features, labels, metric="euclidean"))
        protocols["feature_silhouette"] = protocol(definition="sklearn-silhouette-euclidean-by-class", n=m)
    return values, protocols


def latent_bits(cfg: Config, rec: Reconstructions) -> tuple[dict[str, float], dict[str, str]]:
    """Bits per pixel of the VAE's fp16 latent, 16·C·h·w/(H·W) (the paper's 1.000 for SD-VAE)."""
    config = registry.vae_config(cfg)
    h, w = rec.original.shape[1:3]
    factor = vae.downsample_factor(config)
    bits = LATENT_BITS * config["latent_channels"] * (h // factor) * (w // factor)
    return {"bpp": bits / float(h * w)}, {"bpp": protocol(definition="16*C*h*w/(H*W)")}
