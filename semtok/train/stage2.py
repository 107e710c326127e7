"""`semtok stage2 --variant NAME --output DIR`: Stage II, refinement-oriented fine-tuning (SPEC §2).

The decoder's noisy-latent input becomes learnable mask tokens; one forward pass predicts the clean
latent x̂_v, the frozen VAE decodes it to Î, and
    L_rec = ||I − Î||² + λ_p·L_per(I, Î) + λ_G·L_G(Î)                (paper Eq. 7)
with L_per = LPIPS (VGG) + ResNet logit loss (Table 11 selects), L_G the hinge loss of a MaskBiT
discriminator switched on at `gan.start` (its own optimizer and lr, LeCam regularisation).

Encoder and quantizer are frozen by default (the tokens stay those of Stage I). With
`freeze_encoder: false` (the `finetune-only` variant of Table 12, which has no Stage I and starts
from the SD3.5 initialisation) they train too, with Stage I's encoder terms added (`encoder_loss`).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from semtok import paths, registry
from semtok.config import Config, section_hash
from semtok.losses.gan import discriminator_hinge, gan_active, generator_hinge, lecam
from semtok.losses.perceptual import PerceptualLoss
from semtok.models.discriminator import Discriminator
from semtok.models.tokenizer import SemTok
from semtok.train.loop import Objective, StepOutput, Trainer
from semtok.train.stage1 import (
    ENCODER_TERMS,
    SiglipOnline,
    build_tokenizer,
    compile_blocks,
    data_stream,
    encoder_loss,
    tokenizer_settings,
)

NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="tokenizer variant (config: tokenizer_variants)")
    parser.add_argument(
        "--output", required=True, help="folder for the final tokenizer (SemTok.from_pretrained)"
    )


def stage2_start(cfg: Config, variant: str) -> SemTok:
    """The Stage I tokenizer this variant refines (or a fresh one for `finetune-only`), with its
    decoder turned into a one-step refiner and the encoder frozen as configured."""
    source = cfg.stage1_source(variant)
    if source is None:
        model = build_tokenizer(cfg, variant)
    else:
        model = SemTok.from_pretrained(paths.tokenizer_dir(cfg.out, source, "stage1"))
    model.decoder.enable_refiner()
    model.register_to_config(decoder_config=registry.public_config(model.decoder.config))
    if cfg.tokenizer_variant(variant).stage2.freeze_encoder:
        for part in (model.encoder, model.quantizer, model.semantic):
            if part is not None:
                part.requires_grad_(False)
    return model


@torch.no_grad()
def refiner_errors(model: SemTok, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(latent MSE, pixel MSE) of the refiner's one-step reconstructions of `batch` ("latent", "image")."""
    out = model.eval()(batch["latent"], stage="stage2")
    return F.mse_loss(out["latent"], batch["latent"]).item(), F.mse_loss(out["image"], batch["image"]).item()


def train_stage2(cfg: Config, variant: str, output: Path) -> dict[str, Any]:
    t = cfg.tokenizer_variant(variant)
    s2 = t.stage2
    torch.manual_seed(cfg.seed)
    model = stage2_start(cfg, variant)
    if cfg.compute.grad_checkpointing:
        model.vae.enable_gradient_checkpointing()
    disc = Discriminator(s2.gan.channels, s2.gan.channel_mults)
    disc_optim = dataclasses.replace(s2.optim, warmup=0)
    job = f"tokenizer-{variant}-stage2"
    trainer = Trainer(
        job,
        {
            "model": Objective(model, s2.optim),
            "disc": Objective(disc, disc_optim, lr=s2.gan.lr, ema=False),
        },
        cfg.compute,
        paths.checkpoint_dir(cfg.out, job),
        paths.log_dir(cfg.out, job),
        seed=cfg.seed,
        settings=section_hash(*tokenizer_settings(cfg, variant)),
    )
    compile_blocks(trainer.unwrap(), cfg.compute.compile)
    perceptual = PerceptualLoss(
        s2.perceptual,
        registry.load_lpips(cfg) if "lpips" in s2.perceptual else None,
        registry.load_resnet(cfg) if "resnet" in s2.perceptual else None,
        s2.resnet_size,
    ).to(trainer.device)
    aux = not s2.freeze_encoder
    online = aux and model.semantic is not None and not cfg.data.precompute_siglip
    siglip = SiglipOnline(cfg, trainer.device) if online else None
    features = ("latents", "siglip") if aux and model.semantic is not None and not online else ("latents",)
    make_batches = data_stream(cfg, trainer, s2.optim.batch_size, features, images=True)

    def step_fn(tr: Trainer, batch: dict[str, Any]) -> StepOutput:
        images, latents = batch["image"], batch["latent"]
        sig = siglip(images) if siglip is not None else batch.get("siglip")
        with tr.autocast():
            out = tr.modules["model"](latents, sig, stage="stage2", aux=aux)
            fake = out["image"]
            rec = F.mse_loss(fake.float(), images.float())
            per = perceptual(images, fake)
            loss = rec + s2.lambda_p * sum(per.values())
            logs = {
                "rec": rec.detach(),
                "latent_mse": F.mse_loss(out["latent"].float(), latents.float()).detach(),
            }
            logs |= {f"per_{k}": v.detach() for k, v in per.items()}
            if aux:
                loss = loss + encoder_loss(out, t)
                logs |= {k: out[k].detach() for k in ENCODER_TERMS}
            losses = {"model": loss}
            active = gan_active(tr.step, s2.gan.start)
            if active:
                # The generator term goes through the unwrapped discriminator (the gradients it leaves
                # there are cleared before the discriminator's own step), so the distributed wrapper
                # sees exactly one forward (real and fake together) and one backward per step.
                adv = generator_hinge(tr.unwrap("disc")(fake))
                losses["model"] = loss + s2.lambda_g * adv
                logits = tr.modules["disc"](torch.cat([images, fake.detach()]))
                real_logits, fake_logits = logits.chunk(2)
                disc_loss = discriminator_hinge(real_logits, fake_logits)
                reg = lecam(tr.unwrap("disc"), real_logits, fake_logits)
                losses["disc"] = disc_loss + s2.gan.lecam * reg
                logs |= {"gan_g": adv.detach(), "gan_d": disc_loss.detach(), "lecam": reg.detach()}
        logs["gan_active"] = torch.tensor(float(active), device=images.device)
        return StepOutput(losses=losses, logs=logs)

    trainer.fit(make_batches, step_fn)
    trainer.export(lambda m, p: m.save_pretrained(p), output)
    return {"variant": variant, "steps": trainer.step, "output": str(output)}


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return train_stage2(cfg, args.variant, Path(args.output))
