"""Class-conditional generation as one object, in the style of diffusers' pipelines: the masked
generator (SPEC §4) samples the tokens, the tokenizer's one-step refiner decodes them to images.

    import torch
    from semtok import SemTokPipeline

    pipe = SemTokPipeline.from_pretrained("results/generator/ar-l", "results/tokenizer/b18/stage2")
    pipe = pipe.to("cuda")
    images = pipe([207, 360, 387], steps=64, cfg_scale=6.0).images      # a list of PIL images
    batch = pipe(labels, output_type="pt", generator=torch.Generator("cuda").manual_seed(0)).images

The sampler settings are the arguments of `__call__`; each one left out takes the paper's value, the
default of `generator.sample` in the config schema (semtok/config.py). On a GPU both models run under
bf16 autocast. The `sample` job (semtok/jobs/generator.py) writes its sample files through this object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from semtok.config import SampleConfig
from semtok.data.images import to_uint8
from semtok.models.generator import MaskedGenerator
from semtok.models.tokenizer import SemTok
from semtok.sampling.masked import Order, SampleOutput, sample
from semtok.sampling.settings import sampler_kwargs

OutputType = Literal["pil", "np", "pt"]


class SemTokPipeline(DiffusionPipeline):
    """transformer: the masked generator (MaskedGenerator); tokenizer: the Stage II SemTok whose tokens
    it models (its K and d must match)."""

    def __init__(self, transformer: MaskedGenerator, tokenizer: SemTok) -> None:
        super().__init__()
        g, k, d = transformer.config, tokenizer.num_tokens, tokenizer.bits
        if (g.num_tokens, g.bits) != (k, d):
            raise ValueError(
                f"the generator models {g.num_tokens} tokens of {g.bits} bits, the tokenizer makes {k} of {d}"
            )
        self.register_modules(transformer=transformer.eval(), tokenizer=tokenizer.eval())

    @classmethod
    def from_pretrained(
        cls, generator: str | os.PathLike, tokenizer: str | os.PathLike | None = None, **kwargs: Any
    ) -> SemTokPipeline:
        """The pipeline of a generator folder and a Stage II tokenizer folder (`save_pretrained` outputs:
        results/generator/<variant>, results/tokenizer/<variant>/stage2), or of one folder written by
        the pipeline's own `save_pretrained` (its transformer/ and tokenizer/); kwargs go to both loaders."""
        if tokenizer is None:
            generator, tokenizer = Path(generator) / "transformer", Path(generator) / "tokenizer"
        return cls(
            MaskedGenerator.from_pretrained(generator, **kwargs), SemTok.from_pretrained(tokenizer, **kwargs)
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on a GPU, nothing on the CPU."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16)

    def _labels(self, class_labels: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1).to(self.device)
        classes = self.transformer.config.num_classes
        if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= classes:
            raise ValueError(
                f"class_labels must be a non-empty list of classes in [0, {classes}), got {labels.tolist()}"
            )
        return labels

    @torch.no_grad()
    def sample_tokens(
        self,
        class_labels: int | Sequence[int] | torch.Tensor,
        settings: SampleConfig,
        generator: torch.Generator | None = None,
        return_steps: Sequence[int] = (),
    ) -> SampleOutput:
        """Tokens of the classes: bits (B, K, d) and, for `return_steps`, the partial sequences.
        `generator` must live on the pipeline's device."""
        with self._autocast():
            return sample(
                self.transformer,
                self._labels(class_labels),
                **sampler_kwargs(settings),
                generator=generator,
                return_steps=return_steps,
            )

    @torch.no_grad()
    def decode(self, bits: torch.Tensor) -> torch.Tensor:
        """bits (B, K, d) → images (B, 3, H, W) float in [0, 1] by the tokenizer's one-step refiner."""
        with self._autocast():
            return self.tokenizer.decode(bits)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | Sequence[int] | torch.Tensor,
        steps: int | None = None,
        order: Order | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        cfg_schedule: Literal["linear", "constant"] | None = None,
        temperature: float | None = None,
        choice_temperature: float | None = None,
        generator: torch.Generator | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Images of `class_labels` (B class ids). steps: forward passes (masked) — a causal generator
        decodes its K tokens one by one; order: "random" or "confidence"; top_p: per-bit nucleus;
        cfg_scale and cfg_schedule ("linear", "constant"): classifier-free guidance; temperature of
        the logits; choice_temperature: the Gumbel noise of confidence order. output_type: "pil" (a
        list of PIL images), "np" ((B, H, W, 3) uint8) or "pt" ((B, 3, H, W) float in [0, 1])."""
        given = {
            "steps": steps,
            "order": order,
            "top_p": top_p,
            "cfg_scale": cfg_scale,
            "cfg_schedule": cfg_schedule,
            "temperature": temperature,
            "choice_temperature": choice_temperature,
        }
        settings = dataclasses.replace(SampleConfig(), **{k: v for k, v in given.items() if v is not None})
        images = self.decode(self.sample_tokens(class_labels, settings, generator).bits)
        if output_type == "pt":
            out: Any = images
        elif output_type in ("np", "pil"):
            out = to_uint8(images)
            if output_type == "pil":
                out = [Image.fromarray(image) for image in out]
        else:
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        return ImagePipelineOutput(images=out) if return_dict else (out,)
