"""SemTok decoder D: SD3.5's MMDiT conditioned on the quantized 1D tokens (SPEC §2, "Decoder D").

The decoder is diffusers' `SD3Transformer2DModel` (SD3.5-Medium config and weights at full size) with
three changes:

- Conditioning. The text context is replaced by the 1D tokens Q(z): (B, K, d). A new
  `Linear(d -> caption_projection_dim)` (`context_embedder`) takes the place of the transformer's
  text `context_embedder`; SD3's pooled text vector is replaced by `pooled_embedder` applied to the
  mean over tokens of the embedded context, fed to the pretrained `time_text_embed`.
- Positions. SD3's sin-cos position embedding of the image tokens is kept, and RoPE is added on the
  queries and keys of every attention (`RoPEJointAttnProcessor`): axial 2D on the image stream, 1D on
  the token stream (2D for the grid2d baseline, `context_layout="2d"`).
- Two modes.
  Stage I (diffusion): `forward(x_t, codes, t)` predicts the velocity eps - x_v of the straight path
  x_t = t * eps + (1 - t) * x_v; the timestep is fed as 1000 * t (SD3's convention).
  Stage II (refiner): `refine(codes)` replaces the noisy latent by learnable mask tokens (one per
  image token, at model width) plus the sin-cos position embedding, fixes t = 1 and predicts the
  clean latent in one pass. **Decision**: x̂_v = -D(mask, codes, t=1), i.e. x_t - t * v with the mask
  tokens standing for noise of mean zero, so a Stage-I model starts from its own velocity
  convention instead of the opposite sign.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin, SD3Transformer2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_processor import Attention
from torch import nn
from torch.utils.checkpoint import checkpoint

from semtok.models.rope import apply_rope, rope_1d, rope_2d

logger = logging.getLogger(__name__)

Rope = tuple[torch.Tensor, torch.Tensor]


class RoPEJointAttnProcessor:
    """SD3 attention with rotary embeddings on q and k (after QK-norm, before SDPA).

    Serves both the joint attention of a block (image stream `hidden_states` and token stream
    `encoder_hidden_states`, attended together as the concatenation [image, tokens]) and the
    image-only `attn2` of SD3.5's dual-attention blocks. `rope` = (cos, sin): (N_img + K, D), image rows
    first; attention over N tokens uses the first N rows, so `attn2` gets the image table.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rope: Rope | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """hidden_states: (B, N_img, W); encoder_hidden_states: (B, K, W) or None."""
        if rope is None:
            raise ValueError("RoPEJointAttnProcessor needs the `rope` (cos, sin) tables")
        q, k, v = _heads(attn, hidden_states, attn.to_q, attn.to_k, attn.to_v, attn.norm_q, attn.norm_k)
        if encoder_hidden_states is not None:
            cq, ck, cv = _heads(
                attn,
                encoder_hidden_states,
                attn.add_q_proj,
                attn.add_k_proj,
                attn.add_v_proj,
                attn.norm_added_q,
                attn.norm_added_k,
            )
            q, k, v = torch.cat([q, cq], dim=2), torch.cat([k, ck], dim=2), torch.cat([v, cv], dim=2)
        cos, sin = rope[0][: q.shape[2]], rope[1][: q.shape[2]]
        q = apply_rope(q, cos, sin).to(v.dtype)
        k = apply_rope(k, cos, sin).to(v.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask).transpose(1, 2).flatten(2)

        num_image = hidden_states.shape[1]
        image = attn.to_out[1](attn.to_out[0](out[:, :num_image]))
        if encoder_hidden_states is None:
            return image
        context = out[:, num_image:]
        if not attn.context_pre_only:
            context = attn.to_add_out(context)
        return image, context


def _heads(
    attn: Attention,
    x: torch.Tensor,
    to_q: nn.Module,
    to_k: nn.Module,
    to_v: nn.Module,
    norm_q: nn.Module | None,
    norm_k: nn.Module | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project x: (B, N, W) to QK-normed q, k and v: (B, H, N, D)."""
    batch = x.shape[0]
    q, k, v = (
        proj(x).view(batch, -1, attn.heads, attn.inner_dim // attn.heads).transpose(1, 2)
        for proj in (to_q, to_k, to_v)
    )
    if norm_q is not None:
        q = norm_q(q)
    if norm_k is not None:
        k = norm_k(k)
    return q, k, v


@dataclass
class LoadReport:
    """What `TokenDecoder.from_sd3` did with the checkpoint.

    new_keys: decoder parameters/buffers not taken from the checkpoint (freshly initialised).
    unused_keys: checkpoint entries the decoder does not use (e.g. the text context embedder).
    """

    new_keys: list[str] = field(default_factory=list)
    unused_keys: list[str] = field(default_factory=list)


class TokenDecoder(ModelMixin, ConfigMixin):
    """SD3 MMDiT decoder from 1D tokens to VAE latents (SPEC §2).

    transformer_config: `SD3Transformer2DModel` kwargs (SD3.5-Medium's: config/paper.yaml); built as
        `self.transformer` (the config key cannot be `transformer`: diffusers' config attributes would
        shadow the module).
    token_dim: d, width of a quantized token; num_tokens: K.
    context_layout: "1d" (1D RoPE over the K tokens) or "2d" (grid2d baseline: the K tokens form a
        sqrt(K) x sqrt(K) grid with axial 2D RoPE).
    latent_size: side of the VAE latent grid (32 for 256 px with SD3.5's VAE); fixes the number of the
        refiner's mask tokens, (latent_size / patch_size)^2.
    refiner: Stage-II model (holds mask tokens); grad_checkpointing: checkpoint each block when training.
    """

    _no_split_modules = ["JointTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        transformer_config: dict[str, Any],
        token_dim: int,
        num_tokens: int,
        latent_size: int,
        context_layout: str = "1d",
        rope_theta: float = 10000.0,
        refiner: bool = False,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if context_layout not in ("1d", "2d"):
            raise ValueError(f"context_layout must be '1d' or '2d', got {context_layout!r}")
        if context_layout == "2d" and math.isqrt(num_tokens) ** 2 != num_tokens:
            raise ValueError(f"context_layout '2d' needs a square number of tokens, got {num_tokens}")
        self.transformer = SD3Transformer2DModel(**transformer_config)
        tcfg = self.transformer.config
        if tcfg.caption_projection_dim != self.transformer.inner_dim:
            raise ValueError("SD3 joint blocks need caption_projection_dim == heads * head_dim")
        # The text context embedder is replaced by the token embedder below (kept out of
        # `transformer` so a checkpoint's text embedder can never load into it by name).
        del self.transformer.context_embedder
        self.context_embedder = nn.Linear(token_dim, tcfg.caption_projection_dim)
        self.pooled_embedder = nn.Linear(tcfg.caption_projection_dim, tcfg.pooled_projection_dim)

        processor = RoPEJointAttnProcessor()
        for block in self.transformer.transformer_blocks:
            block.attn.set_processor(processor)
            if block.attn2 is not None:
                block.attn2.set_processor(processor)

        self.register_parameter("mask_tokens", None)
        if refiner:
            self._create_mask_tokens()
        self._rope_cache: dict[tuple[int, int, torch.device], Rope] = {}

    @property
    def patch_size(self) -> int:
        return self.transformer.config.patch_size

    def _create_mask_tokens(self) -> None:
        grid = self.config.latent_size // self.patch_size
        param = next(self.transformer.parameters())
        tokens = torch.randn(
            1, grid * grid, self.transformer.inner_dim, device=param.device, dtype=param.dtype
        )
        self.mask_tokens = nn.Parameter(tokens * 0.02)

    def enable_refiner(self) -> None:
        """Turn a Stage-I (diffusion) decoder into a Stage-II refiner: add fresh mask tokens."""
        if self.mask_tokens is not None:
            raise RuntimeError("the decoder is already a refiner")
        self._create_mask_tokens()
        # The refiner never embeds a noisy latent: freeze that projection so that no trainable
        # parameter goes unused (DistributedDataParallel requires every one to get a gradient).
        self.transformer.pos_embed.proj.requires_grad_(False)
        self.register_to_config(refiner=True)

    def forward(self, latents: torch.Tensor, codes: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Stage-I velocity prediction.

        latents: (B, C, H, W) noisy x_t; codes: (B, K, d); t: (B,) in [0, 1].
        Returns v̂ ≈ eps - x_v: (B, C, H, W).
        """
        height, width = latents.shape[-2:]
        hidden = self.transformer.pos_embed(latents).contiguous()
        return self._denoise(hidden, codes, 1000.0 * t, height, width)

    def refine(self, codes: torch.Tensor, latent_shape: tuple[int, int] | None = None) -> torch.Tensor:
        """Stage-II one-step reconstruction.

        codes: (B, K, d); latent_shape: (H, W) of the latent, default (latent_size, latent_size).
        Returns x̂_v: (B, C, H, W).
        """
        if self.mask_tokens is None:
            raise RuntimeError("refine() needs a refiner decoder: call enable_refiner() first")
        height, width = latent_shape or (self.config.latent_size, self.config.latent_size)
        num_image = (height // self.patch_size) * (width // self.patch_size)
        if num_image != self.mask_tokens.shape[1]:
            raise ValueError(
                f"latent {height}x{width} has {num_image} patches, the refiner {self.mask_tokens.shape[1]}"
            )
        pos = self.transformer.pos_embed.cropped_pos_embed(height, width)
        hidden = (self.mask_tokens + pos).expand(codes.shape[0], -1, -1)
        timestep = torch.full((codes.shape[0],), 1000.0, device=codes.device)
        return -self._denoise(hidden, codes, timestep, height, width)

    def _denoise(
        self, hidden: torch.Tensor, codes: torch.Tensor, timestep: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """hidden: (B, N_img, W) embedded image tokens; codes: (B, K, d); timestep: (B,) in [0, 1000].

        Returns the unpatchified output: (B, C, height, width).
        """
        expected = (self.config.num_tokens, self.config.token_dim)
        if tuple(codes.shape[1:]) != expected:
            raise ValueError(f"codes must be (B, {expected[0]}, {expected[1]}), got {tuple(codes.shape)}")
        tr = self.transformer
        context = self.context_embedder(codes)
        temb = tr.time_text_embed(timestep, self.pooled_embedder(context.mean(dim=1)))
        attn_kwargs = {"rope": self._rope(height // self.patch_size, width // self.patch_size, codes.device)}
        use_checkpoint = self.config.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in tr.transformer_blocks:
            if use_checkpoint:
                context, hidden = checkpoint(block, hidden, context, temb, attn_kwargs, use_reentrant=False)
            else:
                context, hidden = block(hidden, context, temb, attn_kwargs)
        out = tr.proj_out(tr.norm_out(hidden, temb))
        return self._unpatchify(out, height, width)

    def _unpatchify(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """x: (B, h*w, p*p*C) -> (B, C, h*p, w*p)."""
        p, channels = self.patch_size, self.transformer.out_channels
        x = x.reshape(x.shape[0], height // p, width // p, p, p, channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], channels, height, width)

    def _rope(self, grid_h: int, grid_w: int, device: torch.device) -> Rope:
        """RoPE tables for [image tokens (grid_h x grid_w, row-major), K tokens]: (N_img + K, D) each."""
        key = (grid_h, grid_w, device)
        if key not in self._rope_cache:
            dim, theta = self.transformer.config.attention_head_dim, self.config.rope_theta
            image = rope_2d(grid_h, grid_w, dim, theta, device)
            if self.config.context_layout == "2d":
                side = math.isqrt(self.config.num_tokens)
                tokens = rope_2d(side, side, dim, theta, device)
            else:
                tokens = rope_1d(self.config.num_tokens, dim, theta, device)
            self._rope_cache[key] = (torch.cat([image[0], tokens[0]]), torch.cat([image[1], tokens[1]]))
        return self._rope_cache[key]

    @classmethod
    def from_sd3(
        cls,
        pretrained: str,
        token_dim: int,
        num_tokens: int,
        context_layout: str = "1d",
        subfolder: str | None = "transformer",
        **kwargs: Any,
    ) -> tuple[TokenDecoder, LoadReport]:
        """Decoder initialised from a pretrained SD3 transformer (hub id or local path).

        Every decoder entry comes from the checkpoint except the new token conditioning (and mask
        tokens for a refiner); both those and the checkpoint entries left unused (the text context
        embedder) are returned in the LoadReport and logged as warnings.
        """
        source = SD3Transformer2DModel.from_pretrained(pretrained, subfolder=subfolder)
        config = {k: v for k, v in source.config.items() if not k.startswith("_")}
        model = cls(
            transformer_config=config,
            token_dim=token_dim,
            num_tokens=num_tokens,
            context_layout=context_layout,
            **kwargs,
        )
        report = model.load_transformer_state(source.state_dict())
        return model, report

    def load_transformer_state(self, state: dict[str, torch.Tensor]) -> LoadReport:
        """Load an `SD3Transformer2DModel` state dict into `self.transformer` where names and shapes match."""
        own = self.state_dict()
        prefixed = {f"transformer.{k}": v for k, v in state.items()}
        usable = {k: v for k, v in prefixed.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(usable, strict=False)
        report = LoadReport(
            new_keys=sorted(set(own) - set(usable)), unused_keys=sorted(set(prefixed) - set(usable))
        )
        if report.new_keys:
            logger.warning("decoder keys newly initialised (not in the SD3 checkpoint): %s", report.new_keys)
        if report.unused_keys:
            logger.warning("SD3 checkpoint keys not used by the decoder: %s", report.unused_keys)
        return report
