"""`semtok stage1 --variant NAME --output DIR`: Stage I, generative pre-training (SPEC §2).

Encoder, quantizer and decoder are trained jointly with rectified flow:
    min L_diff + λ_q·L_quant + λ_s·(L_contra + L_distill)            (paper Eq. 6)
(plus commit_weight·L_commit for the LFQ ablation, outside λ_q: `encoder_loss`)
on pre-encoded, normalised SD3.5-VAE latents (the flipped latent for flipped samples) and SigLIP
patch features (precomputed, or computed online when `data.precompute_siglip` is false).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from semtok import paths, registry
from semtok.config import Config, ConfigError, TokenizerConfig, section_hash
from semtok.models.decoder import TokenDecoder
from semtok.models.tokenizer import SemTok, encoder_fields
from semtok.train.loop import Objective, StepOutput, Trainer

NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="tokenizer variant (config: tokenizer_variants)")
    parser.add_argument("--output", required=True, help="folder for the final (EMA) weights")


def tokenizer_settings(cfg: Config, variant: str) -> list[Any]:
    """The config a tokenizer variant's weights depend on (its training jobs' settings hash): the
    variant, the variant whose Stage I it starts from, data, frozen components, compute, seed."""
    source = cfg.stage1_source(variant)
    upstream = cfg.tokenizer_variant(source) if source else None
    return [cfg.tokenizer_variant(variant), upstream, cfg.data, cfg.pretrained, cfg.compute, cfg.seed]


def build_tokenizer(cfg: Config, variant: str) -> SemTok:
    """A fresh SemTok for `variant`: frozen VAE from the registry, decoder from SD3.5 or random."""
    t = cfg.tokenizer_variant(variant)
    vae = registry.load_vae(cfg)
    shift, scale = registry.vae_normalisation(vae.config)
    downsample = 2 ** (len(vae.config.block_out_channels) - 1)
    if cfg.data.resolution % downsample:
        raise ConfigError(
            f"data.resolution {cfg.data.resolution} is not divisible by the VAE factor {downsample}"
        )
    latent_size = cfg.data.resolution // downsample
    encoder = encoder_fields(t, vae.config.latent_channels, latent_size, cfg.compute.grad_checkpointing)
    decoder_kw: dict[str, Any] = {
        "token_dim": t.bits,
        "num_tokens": encoder["num_tokens"],
        "context_layout": "2d" if t.encoder.mode == "grid2d" else "1d",
        "latent_size": latent_size,
        "grad_checkpointing": cfg.compute.grad_checkpointing,
    }
    channels = vae.config.latent_channels
    if t.decoder.init == "pretrained":
        where, subfolder = registry.sd3_location(cfg)
        decoder, _report = TokenDecoder.from_sd3(where, subfolder=subfolder, **decoder_kw)
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
    sem = t.semantic
    semantic = None
    if sem.contrastive or sem.distill:
        semantic = {
            "width": t.encoder.width,
            "code_dim": t.bits,
            "sig_dim": registry.siglip_hidden_size(cfg),
            "contrastive": sem.contrastive,
            "distill": sem.distill,
            "distill_head": sem.distill_head,
            "contrastive_embed_dim": sem.embed_dim,
            "init_temperature": 1.0 / sem.logit_scale_init,
            "max_scale": sem.logit_scale_max,
        }
    quantizer: dict[str, Any] = {
        "kind": t.quantizer,
        "group_size": t.entropy.group_size,
        "tau": t.entropy.tau,
    }
    if t.quantizer == "lfq":
        quantizer["commit_weight"] = t.entropy.commit_weight
    return SemTok(
        encoder_config=encoder,
        quantizer_config=quantizer,
        decoder_config=registry.public_config(decoder.config),
        vae_config=registry.public_config(vae.config),
        semantic_config=semantic,
        latent_shift=shift,
        latent_scale=scale,
        flow_steps=t.sampler.steps,
        flow_shift=t.sampler.shift,
        decoder_module=decoder,
        vae_module=vae,
    )


def compiled_block_types() -> tuple[type, ...]:
    """The repeated transformer blocks that `compute.compile` compiles: the tokenizer's encoder and
    decoder blocks and the generator's blocks."""
    from diffusers.models.attention import JointTransformerBlock

    from semtok.models.encoder import JointBlock
    from semtok.models.generator import Block

    return (JointTransformerBlock, JointBlock, Block)


def compile_blocks(model: torch.nn.Module, enabled: bool) -> int:
    """torch.compile every transformer block in place (GPU only; a no-op on CPU). Returns how many."""
    if not (enabled and torch.cuda.is_available()):
        return 0
    blocks = [m for m in model.modules() if isinstance(m, compiled_block_types())]
    for module in blocks:
        module.compile()
    return len(blocks)


class SiglipOnline:
    """SigLIP features computed inside the training job (`data.precompute_siglip: false`)."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.model = registry.load_siglip(cfg).to(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, Ns, C)."""
        from semtok.data.encode import encode_images_siglip

        return encode_images_siglip(self.model, images).float()


def data_stream(cfg: Config, trainer: Trainer, batch_size: int, features: tuple[str, ...], images: bool):
    """make_batches(segment) for the loop: the loader, seeded by the segment, batches on device."""
    from semtok.data.loader import make_loader

    per_process = max(1, batch_size // trainer.accelerator.num_processes)

    def make_batches(segment: int):
        loader = make_loader(
            cfg,
            "train",
            batch_size=per_process,
            features=features,
            images=images,
            seed=cfg.seed * 100_003 + segment,
        )
        for batch in loader:
            yield {
                k: v.to(trainer.device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()
            }

    return make_batches


ENCODER_TERMS = ("quant", "commit", "distill", "contra")


def encoder_loss(out: dict[str, Any], t: TokenizerConfig) -> torch.Tensor:
    """The encoder's weighted terms, shared by Stage I and Stage II with a trained encoder:
    λ_q·L_quant + commit_weight·L_commit + λ_s·(L_distill + L_contra). `out` holds SemTok.forward's
    terms, whose "commit" already carries commit_weight (LFQ; zero for BSQ)."""
    return (
        t.entropy.weight * out["quant"] + out["commit"] + t.semantic.weight * (out["distill"] + out["contra"])
    )


def train_stage1(cfg: Config, variant: str, output: Path) -> dict[str, Any]:
    t = cfg.tokenizer_variant(variant)
    if t.stage1.from_variant is not None:
        raise ConfigError(
            f"tokenizer_variants.{variant}: Stage I is {t.stage1.from_variant!r} (stage1.from_variant); nothing to train"
        )
    torch.manual_seed(cfg.seed)
    model = build_tokenizer(cfg, variant)
    job = f"tokenizer-{variant}-stage1"
    trainer = Trainer(
        job,
        {"model": Objective(model, t.stage1.optim)},
        cfg.compute,
        paths.checkpoint_dir(cfg.out, job),
        paths.log_dir(cfg.out, job),
        seed=cfg.seed,
        settings=section_hash(*tokenizer_settings(cfg, variant)),
    )
    compile_blocks(trainer.unwrap(), cfg.compute.compile)
    online = not cfg.data.precompute_siglip and model.semantic is not None
    siglip = SiglipOnline(cfg, trainer.device) if online else None
    features = ("latents",) if online or model.semantic is None else ("latents", "siglip")
    make_batches = data_stream(cfg, trainer, t.stage1.optim.batch_size, features, images=online)

    def step_fn(tr: Trainer, batch: dict[str, Any]) -> StepOutput:
        sig = siglip(batch["image"]) if siglip is not None else batch.get("siglip")
        with tr.autocast():
            out = tr.modules["model"](batch["latent"], sig, stage="stage1")
        loss = out["diff"] + encoder_loss(out, t)
        q = out["quantizer"]
        logs = {k: out[k].detach() for k in ("diff", *ENCODER_TERMS)} | q.metrics
        return StepOutput(losses={"model": loss}, logs=logs)

    trainer.fit(make_batches, step_fn)
    trainer.export(lambda m, p: m.save_pretrained(p), output)
    return {"variant": variant, "steps": trainer.step, "output": str(output)}


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return train_stage1(cfg, args.variant, Path(args.output))
