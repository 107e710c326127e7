"""SemTok: encoder E → quantizer Q → decoder D, with the frozen VAE that maps pixels to latents and
back, and the semantic-alignment heads used in training (SPEC §2). This is also the Python API:

    from semtok import SemTok
    tok = SemTok.from_pretrained("results/tokenizer/b18/stage2").to("cuda")
    out = tok.encode(images)                 # images: (B, 3, 256, 256) float in [0, 1] or uint8
    out.indices                              # (B, K) int64 in [0, 2^d); out.bits: (B, K, d) bool
    recon = tok.decode(out.indices)          # (B, 3, 256, 256) float in [0, 1], one-step refiner
    recon = tok.decode_flow(out.indices, steps=25)   # a Stage I tokenizer: the flow sampler

Everything (VAE included) is saved in one folder with `save_pretrained` (config + safetensors).
Latents are rounded to fp16 before normalisation exactly like the pre-encoded shards, so `encode`
gives the same tokens as the token dump of the same images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from semtok.config import FlowSamplerConfig, TokenizerConfig, check_argument
from semtok.losses.semantic import SemanticAlignment
from semtok.models import vae
from semtok.models.decoder import TokenDecoder
from semtok.models.encoder import EncoderConfig, EncoderOutput, MMDiTEncoder
from semtok.models.quantizer import LookupFreeQuantizer, QuantizerBase, QuantizerOutput, build_quantizer
from semtok.models.saved import SavedModelMixin
from semtok.sampling.flow import sample_flow


@dataclass
class TokenizerOutput:
    """indices: (B, K) int64; bits: (B, K, d) bool."""

    indices: torch.Tensor
    bits: torch.Tensor


class SemTok(SavedModelMixin, ModelMixin, ConfigMixin):
    """encoder_config: EncoderConfig fields; quantizer_config: {"kind", "group_size", "tau",
    ("commit_weight")}; decoder_config: TokenDecoder config; vae_config: AutoencoderKL config;
    latent_shift/latent_scale: the VAE's normalisation (z - shift) * scale; flow_steps/flow_shift:
    defaults of the flow decoding (`decode_flow`); semantic_config: SemanticAlignment kwargs or None
    (no heads). (Config keys must not share the submodules' names: diffusers exposes config entries as
    attributes.) Built from the experiment config by `semtok.models.factory.build_tokenizer`; trained
    through the objectives of `semtok.train.tokenizer`."""

    ignore_for_config = ["decoder_module", "vae_module"]
    _no_split_modules = ["JointTransformerBlock"]
    config_types = {
        "encoder_config": (EncoderConfig,),
        "quantizer_config": (build_quantizer, LookupFreeQuantizer),
        "decoder_config": (TokenDecoder,),
        "decoder_config.transformer_config": (SD3Transformer2DModel,),
        "vae_config": (AutoencoderKL,),
        "semantic_config": (SemanticAlignment,),
    }

    @register_to_config
    def __init__(
        self,
        encoder_config: dict[str, Any],
        quantizer_config: dict[str, Any],
        decoder_config: dict[str, Any],
        vae_config: dict[str, Any],
        latent_shift: float,
        latent_scale: float,
        flow_steps: int,
        flow_shift: float,
        semantic_config: dict[str, Any] | None = None,
        decoder_module: TokenDecoder | None = None,
        vae_module: AutoencoderKL | None = None,
    ) -> None:
        super().__init__()
        enc = EncoderConfig(**encoder_config)
        self.encoder = MMDiTEncoder(enc)
        qkw = dict(quantizer_config)
        self.quantizer: QuantizerBase = build_quantizer(qkw.pop("kind"), enc.token_dim, **qkw)
        self.decoder = decoder_module if decoder_module is not None else TokenDecoder(**decoder_config)
        self.vae = vae_module if vae_module is not None else AutoencoderKL(**vae_config)
        self.vae.requires_grad_(False).eval()
        self.semantic = SemanticAlignment(**semantic_config) if semantic_config else None

    # -- properties ---------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        return self.config.encoder_config["token_dim"]

    @property
    def num_tokens(self) -> int:
        return self.encoder.num_tokens

    @property
    def resolution(self) -> int:
        return self.config.encoder_config["latent_size"] * vae.downsample_factor(self.vae.config)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        size = self.config.encoder_config["latent_size"]
        return (self.config.encoder_config["in_channels"], size, size)

    def train(self, mode: bool = True) -> SemTok:
        super().train(mode)
        self.vae.eval()  # frozen, always
        return self

    # -- the pieces the training objectives combine (semtok/train/tokenizer.py) ------------------
    def quantize(self, latents: torch.Tensor) -> tuple[EncoderOutput, QuantizerOutput]:
        """Normalised latents (B, C, h, w) → the encoder's output and Q(z)."""
        enc = self.encoder(latents)
        return enc, self.quantizer(enc.z)

    @staticmethod
    def quantizer_losses(q: QuantizerOutput) -> dict[str, torch.Tensor]:
        """{"quant": L_quant (entropy loss, weighted by λ_q in training), "commit": the commitment
        term, already weighted by the quantizer's commit_weight (LFQ; zero for BSQ)}."""
        return {"quant": q.entropy_loss, "commit": q.commit_loss}

    def semantic_losses(
        self, enc: EncoderOutput, q: QuantizerOutput, siglip: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """{"distill", "contra"}: L_distill and L_contra (zero without semantic heads)."""
        zero = enc.x.new_zeros((), dtype=torch.float32)
        if self.semantic is None:
            return {"distill": zero, "contra": zero}
        if siglip is None:
            raise ValueError("semantic alignment needs SigLIP features")
        side = self.config.encoder_config["latent_size"] // self.config.encoder_config["patch_size"]
        return self.semantic(enc.x, (side, side), q.codes, siglip)

    # -- pixels <-> latents -------------------------------------------------------------------
    def latents_to_pixels(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, h, w) → images (B, 3, H, W) in about [-1, 1] (differentiable)."""
        return vae.decode(self.vae, latents, self.config.latent_shift, self.config.latent_scale)

    @torch.no_grad()
    def pixels_to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] → normalised latents, via the fp16 rounding of the shards."""
        mean = vae.encode_mean(self.vae, images)
        return vae.normalise(mean.half().float(), self.config.latent_shift, self.config.latent_scale)

    # -- codes -> latents ---------------------------------------------------------------------
    def refine_latents(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, d) → normalised latents (B, C, h, w) by the one-step refiner (Stage II)."""
        if not self.decoder.config.refiner:
            raise ValueError("this tokenizer has no one-step refiner (Stage I only); use decode_flow")
        return self.decoder.refine(codes, self.latent_shape[1:])

    def flow_latents(
        self,
        codes: torch.Tensor,
        steps: int | None = None,
        shift: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """codes (B, K, d) → normalised latents (B, C, h, w) by the Stage I decoder's Euler flow sampler:
        `steps` (default flow_steps) steps of shift `shift` (default flow_shift) from noise drawn with
        `generator` on its device (the CPU without one). steps and shift have the ranges of
        `tokenizer.sampler` in the config."""
        if self.decoder.config.refiner:
            raise ValueError(
                "this tokenizer's decoder is a Stage II refiner; flow decoding needs Stage I weights"
            )
        steps = check_argument(self.config.flow_steps if steps is None else steps, "steps", FlowSamplerConfig)
        shift = check_argument(self.config.flow_shift if shift is None else shift, "shift", FlowSamplerConfig)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        where = "cpu" if generator is None else generator.device
        noise = torch.randn((codes.shape[0], *self.latent_shape), generator=generator, device=where)
        return sample_flow(
            lambda x, t: self.decoder(x, codes, t),
            noise.to(codes.device, codes.dtype),
            steps=steps,
            shift=shift,
        )

    # -- API ------------------------------------------------------------------------------------
    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        """Validate (B, 3, H, W) uint8 or float in [0, 1]; returns float32 in [-1, 1], converted
        exactly like the image shards are for the pre-encoding (uint8 / 127.5 − 1)."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
        res = self.resolution
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (res, res):
            raise ValueError(f"images must have shape (B, 3, {res}, {res}), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch (B = 0)")
        if images.dtype == torch.uint8:
            return images.float().div(127.5).sub(1.0)
        if not images.is_floating_point():
            raise TypeError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images contain NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.3f}, {hi:.3f}]")
        return images.float() * 2.0 - 1.0

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """indices (B, K) int or bits (B, K, d) bool → codes (B, K, d)."""
        k, d = self.num_tokens, self.bits
        if not isinstance(tokens, torch.Tensor) and isinstance(getattr(tokens, "bits", None), torch.Tensor):
            tokens = tokens.bits  # an encode() or generator-sampling output
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.Tensor (indices or bits), got {type(tokens).__name__}")
        if tokens.ndim == 0 or tokens.shape[0] == 0:
            raise ValueError(f"tokens must be a non-empty batch, got shape {tuple(tokens.shape)}")
        if tokens.dtype == torch.bool:
            if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (k, d):
                raise ValueError(f"bits must have shape (B, {k}, {d}), got {tuple(tokens.shape)}")
            return self.quantizer.bits_to_codes(tokens, self.quantizer.corner)
        if tokens.is_floating_point() or tokens.ndim != 2 or tokens.shape[1] != k:
            raise ValueError(
                f"indices must be an integer tensor of shape (B, {k}), got {tuple(tokens.shape)} {tokens.dtype}"
            )
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= 2**d:
            raise ValueError(f"indices must lie in [0, 2^{d}) = [0, {2**d}), got values in [{lo}, {hi}]")
        return self.quantizer.codes_from_indices(tokens.long())

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> TokenizerOutput:
        """images (B, 3, H, W) uint8 or float in [0, 1] → TokenizerOutput (indices, bits), `batch_size`
        images at a time (the range of `tokenizer.dump_batch_size`)."""
        images = self._check_images(images)
        batch_size = check_argument(batch_size, "batch_size", TokenizerConfig, "dump_batch_size")
        outs = [
            self.encode_latents(self.pixels_to_latents(chunk.to(self.device, self.dtype)))
            for chunk in images.split(batch_size)
        ]
        return TokenizerOutput(torch.cat([o.indices for o in outs]), torch.cat([o.bits for o in outs]))

    @torch.no_grad()
    def encode_latents(self, latents: torch.Tensor) -> TokenizerOutput:
        """Normalised latents (B, C, h, w) → tokens."""
        q = self.quantize(latents.to(self.device, self.dtype))[1]
        return TokenizerOutput(q.indices, q.bits)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """indices (B, K), bits (B, K, d), or an output of `encode` or of the generator's sampler
        (its `.bits`) → images (B, 3, H, W) float in [0, 1], by the one-step refiner."""
        return self._decode(tokens, self.refine_latents, batch_size)

    @torch.no_grad()
    def decode_flow(
        self,
        tokens: torch.Tensor,
        steps: int | None = None,
        shift: float | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """`decode` of a Stage I tokenizer, by its flow sampler (`flow_latents`)."""
        return self._decode(
            tokens, lambda codes: self.flow_latents(codes, steps, shift, generator), batch_size
        )

    def _decode(
        self, tokens: torch.Tensor, to_latents: Callable[[torch.Tensor], torch.Tensor], batch_size: int
    ) -> torch.Tensor:
        """tokens → codes → `to_latents` → pixels, batch by batch → images in [0, 1]."""
        batch_size = check_argument(batch_size, "batch_size", TokenizerConfig, "dump_batch_size")
        codes = self._check_tokens(tokens).to(self.device, self.dtype)
        images = [self.latents_to_pixels(to_latents(c)) for c in codes.split(batch_size)]
        return ((torch.cat(images).float() + 1) / 2).clamp(0, 1)
