"""Models from the experiment config: the one place where config sections (semtok/config.py) become
model hyperparameters (the tokenizer's `build_tokenizer`, the generator's `build_generator`). The model
classes take every such value as an argument and have no defaults of their own for them; the trained
artefacts of a run are loaded here by variant (`load_tokenizer`, `load_generator`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from semtok import paths, registry
from semtok.config import Config, ConfigError, TokenizerConfig
from semtok.data.imagenet import class_names, num_classes
from semtok.models import vae
from semtok.models.decoder import TokenDecoder
from semtok.models.encoder import EncoderConfig
from semtok.models.generator import MaskedGenerator
from semtok.models.tokenizer import SemTok
from semtok.sampling.settings import sampler_kwargs


def encoder_kwargs(
    t: TokenizerConfig, latent_channels: int, latent_size: int, grad_checkpointing: bool
) -> dict[str, Any]:
    """EncoderConfig fields for tokenizer section `t` on a VAE latent grid of `latent_channels` x
    `latent_size`²; grid2d quantizes its (latent_size / patch_size)² image tokens."""
    enc = t.encoder
    num_tokens = (latent_size // t.patch_size) ** 2 if enc.mode == "grid2d" else t.num_tokens
    return dataclasses.asdict(
        EncoderConfig(
            depth=enc.depth,
            width=enc.width,
            heads=enc.heads,
            in_channels=latent_channels,
            patch_size=t.patch_size,
            latent_size=latent_size,
            num_tokens=num_tokens,
            token_dim=t.bits,
            mlp_ratio=enc.mlp_ratio,
            causal_1d=enc.causal_1d,
            mode=enc.mode,
            grad_checkpointing=grad_checkpointing,
        )
    )


def quantizer_kwargs(t: TokenizerConfig) -> dict[str, Any]:
    """`build_quantizer` kwargs (with its "kind") of tokenizer section `t`."""
    kwargs: dict[str, Any] = {"kind": t.quantizer, "group_size": t.entropy.group_size, "tau": t.entropy.tau}
    if t.quantizer == "lfq":
        kwargs["commit_weight"] = t.entropy.commit_weight
    return kwargs


def semantic_kwargs(t: TokenizerConfig, sig_dim: int) -> dict[str, Any] | None:
    """SemanticAlignment kwargs of tokenizer section `t` for SigLIP features of width `sig_dim`; None
    when neither part of L_sem is on."""
    sem = t.semantic
    if not (sem.contrastive or sem.distill):
        return None
    return {
        "width": t.encoder.width,
        "code_dim": t.bits,
        "sig_dim": sig_dim,
        "contrastive": sem.contrastive,
        "distill": sem.distill,
        "distill_head": sem.distill_head,
        "contrastive_embed_dim": sem.embed_dim,
        "init_temperature": 1.0 / sem.logit_scale_init,
        "max_scale": sem.logit_scale_max,
    }


def build_tokenizer(cfg: Config, variant: str) -> SemTok:
    """A fresh SemTok for `variant`: frozen VAE from the registry, decoder from SD3.5 or random."""
    t = cfg.tokenizer_variant(variant)
    frozen_vae = registry.load_vae(cfg)
    shift, scale = vae.normalisation(frozen_vae.config)
    downsample = vae.downsample_factor(frozen_vae.config)
    if cfg.data.resolution % downsample:
        raise ConfigError(
            f"data.resolution {cfg.data.resolution} is not divisible by the VAE factor {downsample}"
        )
    latent_size = cfg.data.resolution // downsample
    channels = frozen_vae.config.latent_channels
    encoder = encoder_kwargs(t, channels, latent_size, cfg.compute.grad_checkpointing)
    decoder_kw: dict[str, Any] = {
        "token_dim": t.bits,
        "num_tokens": encoder["num_tokens"],
        "context_layout": "2d" if t.encoder.mode == "grid2d" else "1d",
        "latent_size": latent_size,
        "grad_checkpointing": cfg.compute.grad_checkpointing,
    }
    if t.decoder.init == "pretrained":
        where, subfolder = registry.sd3_location(cfg)
        decoder, _report = TokenDecoder.from_sd3(where, subfolder=subfolder, **decoder_kw)
        registry.check_architecture(
            t.decoder.transformer, decoder.transformer.config, "tokenizer.decoder.transformer", where
        )
        if decoder.transformer.config.in_channels != channels:
            raise ConfigError(
                f"pretrained.sd3: the transformer takes {decoder.transformer.config.in_channels}-channel "
                f"latents, the VAE makes {channels}"
            )
    else:
        if not t.decoder.transformer:
            raise ConfigError(
                "tokenizer.decoder.transformer: SD3Transformer2DModel kwargs are required for init 'random'"
            )
        # A random decoder is built for the configured VAE: its latent channels and grid follow it.
        arch = {
            **t.decoder.transformer,
            "in_channels": channels,
            "out_channels": channels,
            "sample_size": latent_size,
        }
        decoder = TokenDecoder(transformer_config=arch, **decoder_kw)
    semantic = None
    if t.semantic.contrastive or t.semantic.distill:
        semantic = semantic_kwargs(t, registry.siglip_hidden_size(cfg))
    return SemTok(
        encoder_config=encoder,
        quantizer_config=quantizer_kwargs(t),
        decoder_config=registry.public_config(decoder.config),
        vae_config=registry.public_config(frozen_vae.config),
        semantic_config=semantic,
        latent_shift=shift,
        latent_scale=scale,
        flow_steps=t.sampler.steps,
        flow_shift=t.sampler.shift,
        decoder_module=decoder,
        vae_module=frozen_vae,
    )


def load_tokenizer(
    cfg: Config, variant: str, stage: str = "stage2", device: torch.device | str = "cpu"
) -> SemTok:
    """The trained tokenizer of `variant` after `stage` ("stage1" or "stage2"), in eval mode on `device`."""
    return SemTok.from_pretrained(paths.tokenizer_dir(cfg.out, variant, stage)).to(device).eval()


def tokenizer_shape(cfg: Config, variant: str) -> tuple[int, int]:
    """(K, d) of the trained (Stage II) tokenizer `variant`, from its saved config."""
    config = SemTok.load_config(paths.tokenizer_dir(cfg.out, variant, "stage2"))
    return config["encoder_config"]["num_tokens"], config["encoder_config"]["token_dim"]


def token_shape(cfg: Config, variant: str) -> tuple[int, int]:
    """(K, d) of tokenizer `variant` from the config alone (the trained one's: `tokenizer_shape`); a
    grid2d tokenizer quantizes its (latent side / patch size)^2 image tokens."""
    t = cfg.tokenizer_variant(variant)
    latent_size = cfg.data.resolution // vae.downsample_factor(registry.vae_config(cfg))
    return ((latent_size // t.patch_size) ** 2 if t.encoder.mode == "grid2d" else t.num_tokens), t.bits


def generator_kwargs(
    cfg: Config, variant: str, shape: tuple[int, int] | None = None, classes: int | None = None
) -> dict[str, Any]:
    """MaskedGenerator kwargs of generator `variant`: its size (`generator.sizes`, Table 9), head and
    attention, the shape (K, d) of its tokenizer's tokens (default: the trained tokenizer's), the run's
    classes (default: the train index's, with their names) and the variant's sampler settings
    (`generator.sample`, the generation pipeline's defaults)."""
    g = cfg.generator_variant(variant)
    depth, width, heads = g.sizes[g.arch.size]
    k, d = shape or tokenizer_shape(cfg, g.tokenizer)
    return {
        "depth": depth,
        "width": width,
        "heads": heads,
        "num_tokens": k,
        "bits": d,
        "num_classes": num_classes(cfg) if classes is None else classes,
        "head": g.arch.head,
        "causal": g.arch.causal,
        "class_dropout": g.class_dropout,
        "grad_checkpointing": cfg.compute.grad_checkpointing,
        "sample_settings": sampler_kwargs(g.sample),
        "class_names": class_names(cfg) if classes is None else None,
    }


def build_generator(cfg: Config, variant: str) -> MaskedGenerator:
    """A fresh MaskedGenerator for generator `variant` (random init from torch's global RNG)."""
    return MaskedGenerator(**generator_kwargs(cfg, variant))


def load_generator(cfg: Config, variant: str, device: torch.device | str = "cpu") -> MaskedGenerator:
    """The trained generator `variant`, in eval mode on `device`."""
    return MaskedGenerator.from_pretrained(paths.generator_dir(cfg.out, variant)).to(device).eval()
