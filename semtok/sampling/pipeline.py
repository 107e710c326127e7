"""Class-conditional generation as one object, in the style of diffusers' pipelines: the masked
generator (SPEC §4) samples the tokens, the tokenizer's one-step refiner decodes them to images.

    import torch
    from semtok import SemTokPipeline

    pipe = SemTokPipeline.from_pretrained("results/generator/ar-l", "results/tokenizer/b18/stage2")
    images = pipe([0, 1, 2]).images                            # PIL images, the generator's own settings
    images = pipe(["tench"], num_inference_steps=32, guidance_scale=4.0, generator=torch.manual_seed(0))
    batch = pipe([0, 1], output_type="pt", generator=[torch.Generator().manual_seed(s) for s in (0, 1)])

Arguments are diffusers' (`num_inference_steps`, `guidance_scale`, `generator`, `output_type`,
`return_dict`) plus the sampler's own (`order`, `top_p`, `cfg_schedule`, `temperature`,
`choice_temperature`; `steps` and `cfg_scale` are aliases of the first two). Each one left out takes
the value the generator was trained to be sampled with (its variant's `generator.sample`, saved in its
folder by `train-ar`); a folder saved before semtok recorded them falls back to the config schema's
defaults (the paper's) with a warning. Every value is checked against the range the config schema
gives it. Classes are ids or names (`id2label`, the dataset's class names, also saved by `train-ar`).
`generator`: one torch.Generator on any device, or a list with one per image — then an image depends
only on its own generator, whatever batch it is drawn in. `torch_dtype` (in `from_pretrained`) and
`.to(device, dtype)` apply to both models; on a GPU they run under bf16 autocast unless
`pipe.mixed_precision` says otherwise ("bf16", "fp16", "no"). The `sample` job
(semtok/jobs/generator.py) writes its sample files through this object, in the run's
`compute.mixed_precision`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import numbers
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from semtok.config import SampleConfig, check_argument
from semtok.data.images import to_uint8
from semtok.models.generator import MaskedGenerator
from semtok.models.tokenizer import SemTok
from semtok.sampling.masked import Generators, SampleOutput, sample
from semtok.sampling.settings import sampler_kwargs

OutputType = Literal["pil", "np", "pt"]
ClassLabels = int | str | Sequence[int | str] | torch.Tensor | np.ndarray
ALIASES = {"num_inference_steps": "steps", "guidance_scale": "cfg_scale"}  # diffusers' name -> ours


def check_generators(generator: Any, batch: int) -> None:
    """`generator` must be None, a torch.Generator, or a list of one torch.Generator per image."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(
            f"generator must be a torch.Generator or a list of them (one per image), got {type(generator).__name__}"
        )
    if len(generator) != batch:
        raise ValueError(f"generator: {len(generator)} generators for {batch} images; give one per image")


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
        self.default_settings = self._saved_settings()
        # "bf16", "fp16" or "no" (the `sample` job sets the run's compute.mixed_precision); None: bf16
        # autocast on a GPU, none on the CPU
        self.mixed_precision: str | None = None

    @classmethod
    def from_pretrained(
        cls, generator: str | os.PathLike, tokenizer: str | os.PathLike | None = None, **kwargs: Any
    ) -> SemTokPipeline:
        """The pipeline of a generator folder and a Stage II tokenizer folder (`save_pretrained` outputs:
        results/generator/<variant>, results/tokenizer/<variant>/stage2), or of one folder written by
        the pipeline's own `save_pretrained` (its transformer/ and tokenizer/); kwargs (`torch_dtype`,
        ...) go to both loaders."""
        if tokenizer is None:
            generator, tokenizer = Path(generator) / "transformer", Path(generator) / "tokenizer"
        return cls(
            MaskedGenerator.from_pretrained(generator, **kwargs), SemTok.from_pretrained(tokenizer, **kwargs)
        )

    # -- settings and classes ---------------------------------------------------------------------
    def _saved_settings(self) -> SampleConfig:
        """The sampler settings saved with the generator, checked against the config's ranges; the
        schema's defaults (with a warning) for a generator saved without them."""
        saved = self.transformer.config.get("sample_settings")
        if saved is None:
            defaults = SampleConfig()
            warnings.warn(
                "this generator was saved without its sampling settings (before semtok recorded them): the "
                f"pipeline defaults to the config schema's (the paper's) {sampler_kwargs(defaults)}; pass "
                "num_inference_steps (at most its num_tokens) and the others explicitly",
                stacklevel=3,
            )
            return defaults
        unknown = sorted(set(saved) - set(sampler_kwargs(SampleConfig())))
        if unknown:
            raise ValueError(f"the generator's sample_settings: {unknown} are not sampler settings")
        settings = {
            name: check_argument(value, f"sample_settings.{name}", SampleConfig, name)
            for name, value in saved.items()
        }
        return dataclasses.replace(SampleConfig(), **settings)

    @property
    def id2label(self) -> dict[int, str]:
        """Class id -> name (the dataset's LOC_synset_mapping.txt descriptions, else synset ids); empty
        for a generator saved without class names."""
        return dict(enumerate(self.transformer.config.get("class_names") or []))

    @property
    def labels(self) -> dict[str, int]:
        """Class name -> id; every comma-separated part of a name counts ("tench, Tinca tinca": both)."""
        out = {}
        for i, name in self.id2label.items():
            for part in [name, *name.split(",")]:
                out.setdefault(part.strip(), i)
        return out

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class names -> ids; an unknown name raises ValueError with the closest names."""
        names, known = [label] if isinstance(label, str) else list(label), self.labels
        if not known:
            raise ValueError("this generator was saved without class names: give class ids")
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=3)
                hint = f"; did you mean {close}?" if close else f"; known names include {list(known)[:5]}"
                raise ValueError(f"class_labels: no class named {name!r}{hint} (see pipe.id2label)")
        return [known[name] for name in names]

    def _labels(self, class_labels: ClassLabels) -> torch.Tensor:
        """class_labels as a (B,) int64 tensor on the pipeline's device: ids in [0, num_classes) or names."""
        if isinstance(class_labels, (torch.Tensor, np.ndarray)):
            class_labels = class_labels.tolist()
        items = [class_labels] if isinstance(class_labels, (int, str, numbers.Number)) else list(class_labels)
        if not items:
            raise ValueError("class_labels is empty: give at least one class id or name")
        ids = []
        for item in items:
            if isinstance(item, str):
                ids += self.get_label_ids(item)
            elif isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
                ids.append(int(item))
            else:
                raise ValueError(f"class_labels: {item!r} is not a class id (an int) or a class name (a str)")
        classes = self.transformer.config.num_classes
        bad = [i for i in ids if not 0 <= i < classes]
        if bad:
            raise ValueError(f"class_labels must be classes in [0, {classes}), got {bad}")
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def settings(self, **given: Any) -> SampleConfig:
        """The sampler settings of a call: the defaults with the arguments given (not None), each checked
        against the config's range under the name it was given by; diffusers' `num_inference_steps` and
        `guidance_scale` stand for `steps` and `cfg_scale`."""
        chosen: dict[str, Any] = {}
        for argument, value in given.items():
            if value is None:
                continue
            name = ALIASES.get(argument, argument)
            if name in chosen:
                alias = next(a for a, n in ALIASES.items() if n == name)
                raise ValueError(f"{alias} and {name} are the same setting: give one of them")
            chosen[name] = check_argument(value, argument, SampleConfig, name)
        return dataclasses.replace(self.default_settings, **chosen)

    # -- the two stages -----------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        """Autocast as `mixed_precision` says; unset: bf16 on a GPU, nothing on the CPU."""
        mode = self.mixed_precision or ("bf16" if self.device.type == "cuda" else "no")
        if mode not in ("bf16", "fp16", "no"):
            raise ValueError(f"mixed_precision: expected 'bf16', 'fp16' or 'no', got {mode!r}")
        if mode == "no":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)

    @torch.no_grad()
    def sample_tokens(
        self,
        class_labels: ClassLabels,
        settings: SampleConfig | None = None,
        generator: Generators = None,
        return_steps: Sequence[int] = (),
    ) -> SampleOutput:
        """Tokens of the classes: bits (B, K, d) and, for `return_steps`, the partial sequences, under
        `settings` (default: `default_settings`; its order may also be "raster", Fig. 5's progressive
        decoding)."""
        labels = self._labels(class_labels)
        settings = settings or self.default_settings
        check_generators(generator, len(labels))
        total = self.transformer.config.num_tokens if self.transformer.config.causal else settings.steps
        with self._autocast(), self.progress_bar(total=total) as bar:
            return sample(
                self.transformer,
                labels,
                **sampler_kwargs(settings),
                generator=generator,
                return_steps=return_steps,
                on_step=lambda _step: bar.update(),
            )

    @torch.no_grad()
    def decode(self, bits: torch.Tensor) -> torch.Tensor:
        """bits (B, K, d) → images (B, 3, H, W) float in [0, 1] by the tokenizer's one-step refiner."""
        with self._autocast():
            return self.tokenizer.decode(bits)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: ClassLabels,
        guidance_scale: float | None = None,
        generator: Generators = None,
        num_inference_steps: int | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        *,
        order: Literal["random", "confidence"] | None = None,
        top_p: float | None = None,
        cfg_schedule: Literal["linear", "constant"] | None = None,
        temperature: float | None = None,
        choice_temperature: float | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Images of `class_labels` (class ids or names, one image each).

        guidance_scale (alias cfg_scale): classifier-free guidance, the maximum scale of the linear
        schedule or the constant scale (cfg_schedule "linear" or "constant"); num_inference_steps
        (alias steps): forward passes of a masked generator (at most its K tokens; a causal one decodes
        its K tokens one by one); order: "random" or "confidence"; top_p: per-bit nucleus; temperature of
        the logits; choice_temperature: the Gumbel noise of confidence order. generator: one
        torch.Generator or one per image. output_type: "pil" (a list of PIL images), "np" ((B, H, W, 3)
        uint8) or "pt" ((B, 3, H, W) float in [0, 1]); return_dict=False gives the tuple (images,)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        settings = self.settings(
            num_inference_steps=num_inference_steps,
            steps=steps,
            guidance_scale=guidance_scale,
            cfg_scale=cfg_scale,
            order=order,
            top_p=top_p,
            cfg_schedule=cfg_schedule,
            temperature=temperature,
            choice_temperature=choice_temperature,
        )
        images = self.decode(self.sample_tokens(class_labels, settings, generator).bits)
        out: Any = images
        if output_type in ("np", "pil"):
            out = to_uint8(images)
            if output_type == "pil":
                out = [Image.fromarray(image) for image in out]
        return ImagePipelineOutput(images=out) if return_dict else (out,)
