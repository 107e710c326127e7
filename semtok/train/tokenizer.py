"""Training the tokenizer (SPEC §2): the objectives of Stage I and Stage II and what both stages share.

Stage I, generative pre-training with rectified flow (`FlowMatchingObjective`): encoder, quantizer and
decoder trained jointly,
    min L_diff + λ_q·L_quant + λ_s·(L_contra + L_distill)            (paper Eq. 6)
(plus commit_weight·L_commit for the LFQ ablation, outside λ_q: `encoder_loss`), on pre-encoded,
normalised SD3.5-VAE latents (the flipped latent for flipped samples) and SigLIP patch features
(precomputed, or computed online when `data.precompute_siglip` is false: `SiglipOnline`).

Stage II, refinement-oriented fine-tuning (`RefinerObjective`): the decoder's noisy-latent input becomes
learnable mask tokens; one forward pass predicts the clean latent x̂_v and the frozen VAE decodes it to
Î, trained with
    L_rec = ||I − Î||² + λ_p·L_per(I, Î) + λ_G·L_G(Î)                (paper Eq. 7)
(L_per: semtok.losses.perceptual, L_G: semtok.losses.gan). Encoder and quantizer are frozen by default
(`stage2_start`); with `freeze_encoder: false` (the `finetune-only` variant of Table 12, which has no
Stage I and starts from the SD3.5 initialisation) they train too, with Stage I's encoder terms added.

The objectives are the modules the training loop optimises (and wraps for DDP/FSDP): each holds the
SemTok as `.tokenizer`, and its forward returns the stage's loss terms; `stage1_step` and `stage2_step`
weigh them into each step's losses. The training scripts are the `stage1` and `stage2` jobs
(semtok/jobs/tokenizer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semtok import paths, registry
from semtok.config import Config, TokenizerConfig
from semtok.losses.gan import discriminator_hinge, gan_active, generator_hinge, lecam
from semtok.losses.perceptual import PerceptualLoss
from semtok.models.factory import build_tokenizer
from semtok.models.tokenizer import SemTok
from semtok.sampling.flow import flow_matching_targets, sample_timesteps
from semtok.train.loop import StepOutput, Trainer, segment_seed

ENCODER_TERMS = ("quant", "commit", "distill", "contra")


class SiglipOnline:
    """SigLIP features computed inside the training job (`data.precompute_siglip: false`)."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.model = registry.load_siglip(cfg).to(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → (B, Ns, C)."""
        from semtok.data.encode import encode_images_siglip

        return encode_images_siglip(self.model, images).float()


def data_stream(
    cfg: Config, trainer: Trainer, batch_size: int, features: tuple[str, ...], images: bool, seed: int
):
    """make_batches(segment) for the loop: the loader, seeded by (seed, segment), batches on device."""
    from semtok.data.loader import make_loader

    per_process = max(1, batch_size // trainer.accelerator.num_processes)

    def make_batches(segment: int):
        loader = make_loader(
            cfg,
            "train",
            batch_size=per_process,
            features=features,
            images=images,
            seed=segment_seed(seed, segment),
        )
        for batch in loader:
            yield {
                k: v.to(trainer.device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()
            }

    return make_batches


def encoder_loss(out: dict[str, Any], t: TokenizerConfig) -> torch.Tensor:
    """The encoder's weighted terms, shared by Stage I and Stage II with a trained encoder:
    λ_q·L_quant + commit_weight·L_commit + λ_s·(L_distill + L_contra). `out` holds an objective's
    terms, whose "commit" already carries commit_weight (LFQ; zero for BSQ)."""
    return (
        t.entropy.weight * out["quant"] + out["commit"] + t.semantic.weight * (out["distill"] + out["contra"])
    )


class FlowMatchingObjective(nn.Module):
    """Stage I: the loss terms of Eq. 6 for one batch."""

    def __init__(self, tokenizer: SemTok) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, latents: torch.Tensor, siglip: torch.Tensor | None) -> dict[str, Any]:
        """latents (B, C, h, w) normalised x_v, siglip (B, Ns, C_sig) or None → the terms, unweighted
        except "commit": "diff" (the velocity MSE at t ~ U[0, 1]), "quant" (L_quant), "commit" (LFQ's
        commitment term times its commit_weight, 0 for BSQ), "distill", "contra"; and "quantizer", the
        quantizer's output."""
        tok = self.tokenizer
        enc, q = tok.quantize(latents)
        t = sample_timesteps(latents.shape[0], device=latents.device)
        x_t, v = flow_matching_targets(latents, t, torch.randn_like(latents))
        v_hat = tok.decoder(x_t, q.codes, t)
        out: dict[str, Any] = {"diff": F.mse_loss(v_hat.float(), v.float())}
        out |= tok.quantizer_losses(q) | tok.semantic_losses(enc, q, siglip)
        out["quantizer"] = q
        return out


class RefinerObjective(nn.Module):
    """Stage II: the one-step reconstruction whose pixels Eq. 7 scores."""

    def __init__(self, tokenizer: SemTok) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def forward(
        self, latents: torch.Tensor, siglip: torch.Tensor | None = None, encoder_terms: bool = False
    ) -> dict[str, Any]:
        """latents (B, C, h, w) normalised x_v → {"latent": x̂_v (B, C, h, w), "image": Î (B, 3, H, W) in
        [-1, 1], "quantizer"}, plus the encoder's terms ("quant", "commit", "distill", "contra") when
        `encoder_terms` (the encoder trains in Stage II; they need siglip)."""
        tok = self.tokenizer
        trainable = any(p.requires_grad for p in tok.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            enc, q = tok.quantize(latents)
        x_hat = tok.decoder.refine(q.codes, latents.shape[-2:])
        out = {"latent": x_hat, "image": tok.latents_to_pixels(x_hat), "quantizer": q}
        if encoder_terms:
            out |= tok.quantizer_losses(q) | tok.semantic_losses(enc, q, siglip)
        return out


def stage2_start(cfg: Config, variant: str) -> SemTok:
    """The Stage I tokenizer this variant refines (or a fresh one for `finetune-only`), with its
    decoder turned into a one-step refiner and the encoder frozen as configured."""
    source = cfg.stage1_source(variant)
    if source is None:
        model = build_tokenizer(cfg, variant)
    else:
        model = SemTok.from_pretrained(paths.tokenizer_dir(cfg.out, source, "stage1"))
    return make_refiner(model, cfg.tokenizer_variant(variant).stage2.freeze_encoder)


def make_refiner(model: SemTok, freeze_encoder: bool) -> SemTok:
    """`model` with its decoder turned into the one-step refiner, the encoder side frozen if asked."""
    model.decoder.enable_refiner()
    model.register_to_config(decoder_config=registry.public_config(model.decoder.config))
    if freeze_encoder:
        for part in (model.encoder, model.quantizer, model.semantic):
            if part is not None:
                part.requires_grad_(False)
    return model


@torch.no_grad()
def refiner_errors(model: SemTok, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(latent MSE, pixel MSE) of the refiner's one-step reconstructions of `batch` ("latent", "image")."""
    out = RefinerObjective(model.eval())(batch["latent"])
    return F.mse_loss(out["latent"], batch["latent"]).item(), F.mse_loss(out["image"], batch["image"]).item()


Siglip = SiglipOnline | None
StepFn = Callable[[Trainer, dict[str, Any]], StepOutput]


def stage1_step(t: TokenizerConfig, siglip: Siglip) -> StepFn:
    """The loop's step of Stage I (Eq. 6) for tokenizer section `t`: the objective is the trainer's
    "model"; `siglip` computes the features from the batch's images when they are not precomputed."""

    def step(tr: Trainer, batch: dict[str, Any]) -> StepOutput:
        sig = siglip(batch["image"]) if siglip is not None else batch.get("siglip")
        with tr.autocast():
            out = tr.modules["model"](batch["latent"], sig)
        loss = out["diff"] + encoder_loss(out, t)
        q = out["quantizer"]
        logs = {k: out[k].detach() for k in ("diff", *ENCODER_TERMS)} | q.metrics
        return StepOutput(losses={"model": loss}, logs=logs)

    return step


def stage2_step(t: TokenizerConfig, perceptual: PerceptualLoss, siglip: Siglip) -> StepFn:
    """The loop's step of Stage II (Eq. 7) for tokenizer section `t`: the refiner objective is the
    trainer's "model", the discriminator its "disc" (hinge loss with LeCam regularisation, from
    `gan.start` on); with a trained encoder, Stage I's encoder terms are added."""
    s2 = t.stage2
    encoder_terms = not s2.freeze_encoder

    def step(tr: Trainer, batch: dict[str, Any]) -> StepOutput:
        images, latents = batch["image"], batch["latent"]
        sig = siglip(images) if siglip is not None else batch.get("siglip")
        with tr.autocast():
            out = tr.modules["model"](latents, sig, encoder_terms)
            fake = out["image"]
            rec = F.mse_loss(fake.float(), images.float())
            per = perceptual(images, fake)
            loss = rec + s2.lambda_p * sum(per.values())
            logs = {
                "rec": rec.detach(),
                "latent_mse": F.mse_loss(out["latent"].float(), latents.float()).detach(),
            }
            logs |= {f"per_{k}": v.detach() for k, v in per.items()}
            if encoder_terms:
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

    return step
