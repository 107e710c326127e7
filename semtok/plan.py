"""The bill before the run (`semtok plan`): the work `all_tables` plans for a config, stage by stage, in
FLOPs and GPU-hours, before anything is submitted.

FLOPs are measured, not estimated: torch's flop counter (`torch.utils.flop_counter`) runs each stage's
own step (the trainers' step functions, the sampler's forward, the decoders, the evaluation networks)
on the meta device, so no weight is allocated and nothing is downloaded. The pretrained networks are
built from the architecture the config states (`pretrained.*.arch`, SD3.5's transformer config in
`tokenizer.decoder.transformer`) with random weights. Stacks of identical blocks are measured at
reduced depth and scaled: f(D) = f(1) + (D - 1) * (f(2) - f(1)) per stack (the SD3.5 decoder's dual
attention blocks separately). The count is of model FLOPs: gradient checkpointing's recomputation and
the optimizer are left out, as MFU conventions do.

GPU-hours = FLOPs / (peak x MFU) at a stated peak (default 989 TFLOP/s: an H100 or H200 in dense bf16)
and MFU (default 0.40); the GPUs of each job come from the workflow profile's resources (nodes x gres).
The paper states no compute budget, so there is nothing of its to compare with.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from semtok import paths
from semtok.config import Config, ConfigError, from_dict, to_dict
from semtok.data.imagenet import iter_index
from semtok.sampling.settings import PROGRESSIVE, sample_config

IMAGENET = {"train": 1_281_167, "val": 50_000, "classes": 1000}
PEAK_TFLOPS = 989.0
MFU = 0.40
RESNET50 = {"block": "bottleneck", "layers": [3, 4, 6, 3], "width_per_group": 64, "num_classes": 1000}


@dataclass
class Stage:
    """One row of the bill: `jobs` jobs of `rule`, each doing `units` units (steps or images) of
    `flops_per_unit` FLOPs on `gpus` GPUs."""

    name: str
    rule: str
    jobs: int
    units: float
    unit: str
    flops_per_unit: float
    gpus: int

    @property
    def flops(self) -> float:
        return self.jobs * self.units * self.flops_per_unit

    def gpu_hours(self, peak_tflops: float, mfu: float) -> float:
        return self.flops / (peak_tflops * 1e12 * mfu) / 3600

    def wall_hours(self, peak_tflops: float, mfu: float) -> float:
        """Wall-clock hours of the stage's work on one job's GPUs (one when the profile gives none)."""
        return self.gpu_hours(peak_tflops, mfu) / (self.gpus or 1)


def flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of `fn`, counted by torch's flop counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def scaled(measure: Callable[[int], float], depth: int) -> float:
    """f(depth) of a stack of identical blocks from f(1) and f(2)."""
    one = measure(1)
    return one + (depth - 1) * (measure(2) - one) if depth > 1 else one


# ---------------------------------------------------------------------------------------------
# The config the measurements build from


def architecture_config(cfg: Config) -> Config:
    """`cfg` with every pretrained network built from its stated architecture with random weights (no
    download), and without gradient checkpointing (model FLOPs)."""
    raw = to_dict(cfg)
    for name in ("vae", "siglip"):
        comp = raw["pretrained"][name]
        if comp["source"] == "pretrained" and not comp["arch"]:
            raise ConfigError(
                f"pretrained.{name}.arch: the plan builds the network from its architecture; state it "
                "(config/paper.yaml does for SD3.5's VAE and SigLIP 2)"
            )
        comp["source"] = "random"
    for name in ("lpips", "resnet"):
        comp = raw["pretrained"][name]
        if comp["source"] == "pretrained":
            comp.update(source="random", arch={} if name == "lpips" else dict(RESNET50))
        elif comp["source"] == "bootstrap":
            comp["source"] = "random"
    raw["tokenizer"]["decoder"]["init"] = "random"
    raw["compute"]["grad_checkpointing"] = False
    return from_dict(raw)


def _with_depths(cfg: Config, variant: str, encoder: int, layers: int, dual: list[int]) -> Config:
    """`cfg` whose tokenizer variant has `encoder` encoder blocks and `layers` decoder blocks (`dual`:
    the dual-attention ones)."""
    raw = to_dict(cfg)
    t = cfg.tokenizer_variant(variant)
    override = copy.deepcopy(raw["tokenizer_variants"][variant])
    override.setdefault("encoder", {})["depth"] = encoder
    transformer = dict(t.decoder.transformer, num_layers=layers, dual_attention_layers=dual)
    override.setdefault("decoder", {})["transformer"] = transformer
    raw["tokenizer_variants"][variant] = override
    return from_dict(raw)


def counts(cfg: Config) -> dict[str, int]:
    """Train and validation images and classes of the run: from its index when it exists, else from the
    config (ImageNet-1k's sizes for a real ImageNet), limited by `data.subset`."""
    found = {}
    for split in ("train", "val"):
        index = paths.index_file(cfg.out, split)
        if index.is_file():
            rows = [r for r in iter_index(index) if not r.rejected]
            found[split], found["classes"] = len(rows), len({r.cls for r in rows})
    if len(found) == 3:
        return found
    if cfg.data.source == "synthetic":
        s = cfg.data.synthetic
        classes, per_class = s.num_classes, {"train": s.train_per_class, "val": s.val_per_class}
    else:
        classes = IMAGENET["classes"]
        per_class = {split: IMAGENET[split] / classes for split in ("train", "val")}
    sub = cfg.data.subset
    classes = min(classes, sub.classes) if sub.classes else classes
    out = {"classes": classes}
    for split in ("train", "val"):
        cap = getattr(sub, f"{split}_per_class")
        out[split] = round(classes * (min(per_class[split], cap) if cap else per_class[split]))
    return out


# ---------------------------------------------------------------------------------------------
# Measurements: each stage's own computation on the meta device, a batch of B, FLOPs per sample

B = 2


class _Loop:
    """What a stage's step function reads of its trainer: the modules, autocast (none: the arithmetic
    is the same), the step (late enough for every loss term, the GAN's included)."""

    def __init__(self, modules: dict[str, torch.nn.Module]) -> None:
        self.modules, self.step = modules, 2**31

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def unwrap(self, key: str = "model") -> torch.nn.Module:
        return self.modules[key]


def _train(step: Callable[[Any, dict], Any], loop: _Loop, batch: dict[str, Any]) -> float:
    """FLOPs per sample of one training step (forward and every objective's backward)."""

    def run() -> None:
        for loss in step(loop, batch).losses.values():
            loss.backward()

    return flops(run) / B


def _siglip_features(cfg: Config) -> torch.Tensor:
    from semtok.registry import tiny_siglip_config

    c = tiny_siglip_config(cfg.pretrained.siglip.arch)
    return torch.randn(B, (c.image_size // c.patch_size) ** 2, c.hidden_size)


def _tokenizer_stack(cfg: Config, variant: str, measure: Callable[[Config], float]) -> float:
    """measure(config) of the full encoder and decoder stacks, from four reduced-depth measurements."""
    t = cfg.tokenizer_variant(variant)
    n, dual = t.decoder.transformer["num_layers"], len(t.decoder.transformer.get("dual_attention_layers", []))
    at = functools.partial(_with_depths, cfg, variant)
    base = measure(at(1, 1, []))
    encoder = measure(at(2, 1, [])) - base if t.encoder.depth > 1 else 0.0
    decoder = measure(at(1, 2, [])) - base if n > 1 else 0.0
    extra = measure(at(1, 1, [0])) - base if dual else 0.0
    return base + (t.encoder.depth - 1) * encoder + (n - 1) * decoder + dual * extra


def _built(cfg: Config, variant: str, refiner: bool) -> Any:
    from semtok.models.factory import build_tokenizer
    from semtok.train.tokenizer import make_refiner

    with torch.device("meta"):
        model = build_tokenizer(cfg, variant)
    return make_refiner(model, cfg.tokenizer_variant(variant).stage2.freeze_encoder) if refiner else model


def stage1_flops(cfg: Config, variant: str) -> float:
    """Stage I: one training sample of `variant` (flow matching, quantizer, semantic alignment)."""
    from semtok.train.tokenizer import FlowMatchingObjective, stage1_step

    def measure(c: Config) -> float:
        model = _built(c, variant, refiner=False)
        with torch.device("meta"):
            batch = {"latent": torch.randn(B, *model.latent_shape), "siglip": _siglip_features(c)}
        step = stage1_step(c.tokenizer_variant(variant), None)
        return _train(step, _Loop({"model": FlowMatchingObjective(model)}), batch)

    return _tokenizer_stack(cfg, variant, measure)


def stage2_flops(cfg: Config, variant: str) -> float:
    """Stage II: one training sample of `variant` (refiner, VAE decoder, perceptual losses, GAN)."""
    from semtok import registry
    from semtok.losses.perceptual import PerceptualLoss
    from semtok.models.discriminator import Discriminator
    from semtok.train.tokenizer import RefinerObjective, stage2_step

    def measure(c: Config) -> float:
        s2 = c.tokenizer_variant(variant).stage2
        model = _built(c, variant, refiner=True)
        res = c.data.resolution
        with torch.device("meta"):
            perceptual = PerceptualLoss(
                s2.perceptual,
                registry.load_lpips(c) if "lpips" in s2.perceptual else None,
                registry.load_resnet(c) if "resnet" in s2.perceptual else None,
                s2.resnet_size,
            )
            disc = Discriminator(s2.gan.channels, s2.gan.channel_mults)
            batch = {
                "image": torch.randn(B, 3, res, res),
                "latent": torch.randn(B, *model.latent_shape),
                "siglip": _siglip_features(c),
            }
        step = stage2_step(c.tokenizer_variant(variant), perceptual, None)
        return _train(step, _Loop({"model": RefinerObjective(model), "disc": disc}), batch)

    return _tokenizer_stack(cfg, variant, measure)


def _generator(cfg: Config, variant: str, depth: int) -> torch.nn.Module:
    from semtok.models.factory import generator_kwargs, token_shape
    from semtok.models.generator import MaskedGenerator

    shape = token_shape(cfg, cfg.generator_variant(variant).tokenizer)
    kwargs = generator_kwargs(cfg, variant, shape, counts(cfg)["classes"])
    with torch.device("meta"):
        return MaskedGenerator(**{**kwargs, "depth": depth})


def _tokens(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    c = model.config
    with torch.device("meta"):
        return {"bits": torch.rand(B, c.num_tokens, c.bits) > 0.5, "cls": torch.zeros(B, dtype=torch.long)}


def generator_flops(cfg: Config, variant: str) -> float:
    """AR training: one training sample of generator `variant`."""
    from semtok.train.generator import generator_step

    def measure(depth: int) -> float:
        model = _generator(cfg, variant, depth).train()
        return _train(generator_step(cfg.generator_variant(variant)), _Loop({"model": model}), _tokens(model))

    g = cfg.generator_variant(variant)
    return scaled(measure, g.sizes[g.arch.size][0])


def forward_flops(cfg: Config, variant: str) -> float:
    """One forward pass of generator `variant` for one image, all positions masked (a sampling step)."""

    def measure(depth: int) -> float:
        model = _generator(cfg, variant, depth).eval().requires_grad_(False)
        batch = _tokens(model)
        mask = torch.ones(batch["bits"].shape[:2], dtype=torch.bool, device="meta")
        with torch.no_grad():
            return (
                flops(lambda: model(batch["bits"], None if model.config.causal else mask, batch["cls"])) / B
            )

    g = cfg.generator_variant(variant)
    return scaled(measure, g.sizes[g.arch.size][0])


def decode_flops(cfg: Config, variant: str, flow_steps: int = 0) -> float:
    """Tokens of one image to pixels: the one-step refiner and the VAE decoder, or (flow_steps > 0) the
    Stage I decoder's Euler sampler."""

    def measure(c: Config) -> float:
        model = _built(c, variant, refiner=not flow_steps).eval().requires_grad_(False)
        k, d = model.num_tokens, model.bits
        with torch.device("meta"):
            codes = torch.randn(B, k, d)
        with torch.no_grad():
            to_latents = (
                (lambda: model.flow_latents(codes, flow_steps))
                if flow_steps
                else (lambda: model.refine_latents(codes))
            )
            return flops(lambda: model.latents_to_pixels(to_latents())) / B

    return _tokenizer_stack(cfg, variant, measure)


def encode_flops(cfg: Config, variant: str | None) -> float:
    """One image's pre-encoding (variant None: SD3.5-VAE latents of the image and its flip, and SigLIP
    features) or its token dump by tokenizer `variant` (the image and its flip)."""
    from semtok import registry

    if variant is not None:

        def measure(c: Config) -> float:
            model = _built(c, variant, refiner=False).eval().requires_grad_(False)
            with torch.device("meta"):
                latents = torch.randn(B, *model.latent_shape)
            with torch.no_grad():
                return 2 * flops(lambda: model.quantize(latents)) / B

        return _tokenizer_stack(cfg, variant, measure)
    res = cfg.data.resolution
    with torch.device("meta"):
        vae = registry.load_vae(cfg).requires_grad_(False)
        images = torch.randn(B, 3, res, res)
    with torch.no_grad():
        total = 2 * flops(lambda: vae.encode(images).latent_dist.mean) / B
    if cfg.data.precompute_siglip:

        def siglip(depth: int) -> float:
            raw = to_dict(cfg)
            raw["pretrained"]["siglip"]["arch"] = {
                **raw["pretrained"]["siglip"]["arch"],
                "num_hidden_layers": depth,
            }
            with torch.device("meta"):
                model = registry.load_siglip(from_dict(raw)).requires_grad_(False)
            size = model.config.image_size
            with torch.no_grad():
                return flops(lambda: model(pixel_values=torch.randn(B, 3, size, size, device="meta"))) / B

        total += scaled(siglip, cfg.pretrained.siglip.arch.get("num_hidden_layers", 1))
    return total


def metric_flops(cfg: Config) -> float:
    """One image through the evaluation's networks: the FID/IS/PR extractor (Inception-v3 at 299 px) and
    the class_acc classifier (ResNet-50 at 224 px; its resize and crop are not counted)."""
    import torchvision

    from semtok.eval.features import random_inception

    with torch.device("meta"):
        inception = random_inception(cfg.seed, features=("2048", "logits_unbiased")).requires_grad_(False)
        classifier = torchvision.models.resnet50(weights=None).requires_grad_(False)
        images = torch.zeros(B, 3, cfg.data.resolution, cfg.data.resolution, dtype=torch.uint8)
        crops = torch.zeros(B, 3, 224, 224)
    with torch.no_grad():
        return flops(lambda: (inception(images), classifier(crops))) / B


# ---------------------------------------------------------------------------------------------
# The bill


def _set_resources(profile: Path) -> dict[str, dict[str, Any]]:
    """The `set-resources` of a workflow profile: rule -> its resources."""
    return (yaml.safe_load(profile.read_text()) or {}).get("set-resources", {})


def profile_gpus(profile: Path) -> dict[str, int]:
    """GPUs of one job of each rule in a workflow profile (`set-resources`: nodes x gres "gpu:N")."""
    resources = _set_resources(profile)
    out = {}
    for rule, res in resources.items():
        gres = str(res.get("gres", ""))
        per_node = int(gres.split(":")[-1]) if gres.startswith("gpu") else 0
        out[rule] = per_node * int(res.get("nodes", 1))
    return out


def profile_runtimes(profile: Path) -> dict[str, float]:
    """Wall-clock limit of one job of each rule in a workflow profile (`set-resources` runtime), hours."""
    return {
        rule: float(res["runtime"]) / 60 for rule, res in _set_resources(profile).items() if "runtime" in res
    }


class _Measured:
    """Measurements cached by what they depend on (variants of one architecture cost the same)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg, self.cache = cfg, {}

    def __call__(self, fn: Callable[..., float], *args: Any, depends: Any) -> float:
        key = (fn.__name__, repr(depends))
        if key not in self.cache:
            self.cache[key] = fn(self.cfg, *args)
        return self.cache[key]


def bill(cfg: Config, gpus: dict[str, int]) -> list[Stage]:
    """The work of `all_tables` under `cfg`, one Stage per job kind and variant (or setting)."""
    from semtok.report import spec

    acfg = architecture_config(cfg)
    n = counts(acfg)
    measure = _Measured(acfg)

    def family(variant: str) -> Any:
        """What a tokenizer variant's FLOPs depend on beyond a fraction of a percent: its encoder and
        decoder stacks (bits, quantizer, semantic heads and attention masks add < 0.1 %)."""
        t = acfg.tokenizer_variant(variant)
        return (
            t.encoder.depth,
            t.encoder.width,
            t.encoder.heads,
            t.encoder.mlp_ratio,
            t.encoder.mode,
            t.num_tokens,
            t.patch_size,
            t.decoder.transformer,
        )

    stages = [
        Stage(
            "pre-encoding: VAE latents (+flip), SigLIP",
            "encode_shard",
            1,
            n["train"] + n["val"],
            "image",
            measure(encode_flops, None, depends=(acfg.pretrained.vae, acfg.pretrained.siglip)),
            gpus.get("encode_shard", 1),
        )
    ]
    tokenizers = list(acfg.tokenizer_variants)
    for v in tokenizers:
        t = acfg.tokenizer_variant(v)
        model = family(v)
        if acfg.stage1_source(v) == v:
            per = measure(stage1_flops, v, depends=model)
            stages.append(
                Stage(
                    f"Stage I {v}",
                    "stage1",
                    1,
                    t.stage1.optim.steps,
                    "step",
                    per * t.stage1.optim.batch_size,
                    gpus.get("stage1", 1),
                )
            )
        s2 = t.stage2
        per = measure(
            stage2_flops,
            v,
            depends=(
                model,
                s2.perceptual,
                s2.resnet_size,
                s2.gan.channels,
                s2.gan.channel_mults,
                s2.freeze_encoder,
            ),
        )
        stages.append(
            Stage(
                f"Stage II {v}",
                "stage2",
                1,
                t.stage2.optim.steps,
                "step",
                per * t.stage2.optim.batch_size,
                gpus.get("stage2", 1),
            )
        )
    generators = list(acfg.generator_variants)
    for v in sorted({acfg.generator_variant(g).tokenizer for g in generators}):
        per = measure(encode_flops, v, depends=family(v))
        stages.append(
            Stage(f"token dump {v}", "dump_tokens", 1, n["train"], "image", per, gpus.get("dump_tokens", 1))
        )
    for v in generators:
        g = acfg.generator_variant(v)
        per = measure(generator_flops, v, depends=(g.sizes[g.arch.size], g.arch.head, family(g.tokenizer)))
        stages.append(
            Stage(
                f"AR training {v}",
                "train_ar",
                1,
                g.optim.steps,
                "step",
                per * g.optim.batch_size,
                gpus.get("train_ar", 1),
            )
        )
    metric = measure(metric_flops, depends=acfg.evaluation.classifier)
    for v, settings in spec.generator_settings(acfg).items():
        g = acfg.generator_variant(v)
        forward = measure(forward_flops, v, depends=(g.sizes[g.arch.size], g.arch.head, family(g.tokenizer)))
        decode = measure(decode_flops, g.tokenizer, depends=family(g.tokenizer))
        for setting in settings:
            sc = sample_config(acfg, v, setting)
            images = acfg.evaluation.grid_images if setting == PROGRESSIVE else n["classes"] * sc.per_class
            passes = acfg.tokenizer_variant(g.tokenizer).num_tokens if g.arch.causal else sc.steps
            per = passes * (2 if sc.cfg_scale != 1 else 1) * forward + decode
            stages.append(
                Stage(f"sampling {v} {setting}", "sample", 1, images, "image", per, gpus.get("sample", 1))
            )
            if setting != PROGRESSIVE:
                stages.append(
                    Stage(
                        f"evaluation {v} {setting}",
                        "eval_gen",
                        1,
                        images,
                        "image",
                        metric,
                        gpus.get("eval_gen", 1),
                    )
                )
    recon = min(acfg.evaluation.recon_images, n["val"])
    for need in spec.all_needs(acfg):
        if need.generator or need.reference:
            continue
        if need.setting == "diffusion":
            steps = acfg.tokenizer_variant(need.variant).sampler.steps
            per = measure(decode_flops, need.variant, steps, depends=(family(need.variant), steps))
            rule = "eval_recon_diffusion"
        elif need.setting == "vae":
            per, rule = 0.0, "eval_vae"
        else:
            per, rule = measure(decode_flops, need.variant, depends=family(need.variant)), "eval_recon"
        stages.append(
            Stage(
                f"reconstruction {need.variant} {need.setting}",
                rule,
                1,
                recon,
                "image",
                per + metric,
                gpus.get(rule, 1),
            )
        )
    return stages


GROUPS = {
    "encode_shard": "pre-encoding",
    "stage1": "Stage I",
    "stage2": "Stage II",
    "dump_tokens": "token dumps",
    "train_ar": "AR training",
    "sample": "sampling",
    "eval_gen": "generation metrics",
    "eval_recon": "reconstruction metrics",
    "eval_recon_diffusion": "reconstruction metrics",
    "eval_vae": "reconstruction metrics",
}


def render(
    stages: list[Stage],
    peak_tflops: float,
    mfu: float,
    title: str,
    runtimes: dict[str, float] | None = None,
) -> str:
    """The bill as a Markdown table: per stage the jobs, the work, FLOPs, GPU-hours and wall hours per
    job at the given peak and MFU, and the total; then every rule whose job would outlast its runtime in
    the profile (`runtimes`: rule -> hours)."""
    lines = [
        f"# {title}",
        "",
        f"GPU-hours at {mfu:.0%} MFU of {peak_tflops:g} TFLOP/s per GPU (bf16 dense); FLOPs measured with "
        "torch's flop counter on the configured architectures (model FLOPs: no recomputation, no optimizer).",
        "",
        "| stage | jobs | work per job | TFLOP per step/image | total FLOPs | GPU-hours | GPUs/job | wall h/job |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[str, list[Stage]] = {}
    for s in stages:
        groups.setdefault(GROUPS.get(s.rule, s.rule), []).append(s)
    total_flops = total_hours = 0.0
    for name, rows in groups.items():
        flops_ = sum(s.flops for s in rows)
        hours = sum(s.gpu_hours(peak_tflops, mfu) for s in rows)
        total_flops, total_hours = total_flops + flops_, total_hours + hours
        units = {(s.units, s.unit) for s in rows}
        work = (
            f"{rows[0].units:,.0f} {rows[0].unit}s"
            if len(units) == 1
            else f"{min(u for u, _ in units):,.0f}–{max(u for u, _ in units):,.0f} {rows[0].unit}s"
        )
        per = sum(s.flops_per_unit for s in rows) / len(rows)
        gpus = max(s.gpus for s in rows) or 1
        wall = max(s.wall_hours(peak_tflops, mfu) for s in rows)
        lines.append(
            f"| {name} | {len(rows)} | {work} | {per / 1e12:.3g} | {flops_:.3g} | {hours:,.1f} | {gpus} | {wall:,.1f} |"
        )
    lines.append(
        f"| **all_tables** | {len(stages)} | | | **{total_flops:.3g}** | **{total_hours:,.0f}** | | |"
    )
    lines += [
        "",
        "The paper states no compute budget (GPU type, count or hours), so there is none to compare with.",
    ]
    over = {}
    for s in stages:
        wall, limit = s.wall_hours(peak_tflops, mfu), (runtimes or {}).get(s.rule)
        if limit and wall > limit:
            over[s.rule] = max(over.get(s.rule, 0.0), wall), limit
    for rule, (wall, limit) in over.items():
        attempts = math.ceil(wall / limit)
        lines += [
            "",
            f"**{rule}**: {wall:,.1f} h a job at this MFU, over its profile runtime of {limit:g} h: Slurm "
            f"stops it at the limit, it checkpoints and a retry resumes it ({attempts} attempts; the "
            f"installed profile retries twice). Give it more with `--set-resources {rule}:runtime=MINUTES`.",
        ]
    return "\n".join(lines) + "\n"
