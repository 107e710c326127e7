"""The experiment schema: one typed tree of dataclasses, loaded from YAML, validated with errors that
name the bad key, overridable from the command line.

Defaults are the paper's values (SPEC §1–§5); `config/paper.yaml` spells every one of them out and
`config/config.yaml` is the tiny offline default that changes sizes only. Tokenizer and generator
*variants* (the ablation rows of the tables) are partial overrides of the base section, merged and
validated like the base.

`workflow/schemas/config.schema.json` is generated from these classes (`semtok config-schema`);
a test keeps it in sync.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


# ----------------------------------------------------------------------------------------------
# Data (SPEC §1)


@dataclass
class SyntheticConfig:
    """The built-in class-conditional dataset of shapes, colours and textures (ImageNet folder layout)."""

    num_classes: int = 10
    train_per_class: int = 64
    val_per_class: int = 16
    min_size: int = 72  # images get random sizes in [min_size, max_size] to exercise resize + crop
    max_size: int = 120
    seed: int = 0


@dataclass
class DataConfig:
    source: Literal["synthetic", "imagenet"] = "imagenet"
    imagenet_root: str | None = None  # holds train/<wnid>/*.JPEG and val/ (per-class or flat)
    val_solution_csv: str | None = None  # flat val folder labels; default <root>/LOC_val_solution.csv
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    resolution: int = 256
    jpeg_quality: int = 95
    train_shards: int = 1282
    val_shards: int = 50
    precompute_siglip: bool = True  # False: SigLIP runs online inside the training job
    on_corrupt_shard: Literal["fail", "skip"] = "fail"
    shuffle_buffer: int = 2000
    encode_batch_size: int = 64


# ----------------------------------------------------------------------------------------------
# Pretrained components (one registry, semtok/registry.py)


@dataclass
class ComponentConfig:
    """Where a frozen or initialising network comes from.

    source: "pretrained" = `id` is a hub id or a local path (real weights);
            "bootstrap"  = a tiny model of the same class trained on the configured data by the
                           `teachers` rule, then loaded exactly like real weights;
            "random"     = a model of the same class built from `arch` with random init.
    """

    source: Literal["pretrained", "bootstrap", "random"] = "pretrained"
    id: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    arch: dict[str, Any] = field(default_factory=dict)
    train_steps: int = 0  # bootstrap only
    batch_size: int = 32  # bootstrap only
    lr: float = 1e-3  # bootstrap only


def _component(**kw: Any) -> Any:
    return field(default_factory=lambda: ComponentConfig(**kw))


@dataclass
class PretrainedConfig:
    cache_dir: str | None = None  # HF_HOME/TORCH_HOME for prefetched weights; None = library default
    offline: bool = False  # set HF_HUB_OFFLINE in jobs (compute nodes without internet)
    vae: ComponentConfig = _component(id="stabilityai/stable-diffusion-3.5-medium", subfolder="vae")
    siglip: ComponentConfig = _component(id="google/siglip2-so400m-patch16-256")
    sd3: ComponentConfig = _component(id="stabilityai/stable-diffusion-3.5-medium", subfolder="transformer")
    lpips: ComponentConfig = _component(id="vgg")
    resnet: ComponentConfig = _component(id="IMAGENET1K_V1")
    inception: ComponentConfig = _component(id="inception-v3-compat")
    lpips_metric: ComponentConfig = _component(id="alex")


# ----------------------------------------------------------------------------------------------
# Shared optimisation settings (the one training loop, semtok/train/loop.py)


@dataclass
class OptimConfig:
    steps: int = 200_000
    batch_size: int = 256  # global batch
    lr: float = 5e-5
    weight_decay: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    warmup: int = 10_000
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float = 1.0
    ema: float = 0.9999
    ckpt_every: int = 2_000
    keep_ckpts: int = 2
    log_every: int = 50


@dataclass
class ComputeConfig:
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    compile: bool = True  # torch.compile of model blocks (GPU only; ignored on CPU)
    grad_checkpointing: bool = True
    fused_adam: bool = True  # GPU only
    allow_tf32: bool = True
    num_workers: int = 8
    threads: int = 0  # torch CPU threads; 0 = library default
    fsdp: bool = False  # multi-GPU: FullyShardedDataParallel instead of DDP (semtok/launch.py)
    forkserver: bool = False  # local runs: jobs fork from a process that imported torch & co. once


# ----------------------------------------------------------------------------------------------
# Tokenizer (SPEC §2)


@dataclass
class EncoderArch:
    depth: int = 8
    width: int = 768
    heads: int = 12
    mlp_ratio: float = 4.0
    causal_1d: bool = False
    mode: Literal["1d", "grid2d"] = "1d"


@dataclass
class DecoderArch:
    init: Literal["pretrained", "random"] = "pretrained"  # pretrained = the `sd3` registry entry
    transformer: dict[str, Any] = field(default_factory=dict)  # SD3Transformer2DModel kwargs (random init)


@dataclass
class EntropyConfig:
    weight: float = 0.0025  # λ_q
    tau: float = 1.0
    group_size: int = 1
    commit_weight: float = 0.25  # LFQ only


@dataclass
class SemanticConfig:
    weight: float = 0.05  # λ_s
    contrastive: bool = True
    distill: bool = True
    distill_head: Literal["linear", "mlp"] = "linear"
    embed_dim: int = 512
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0


@dataclass
class Stage1Config:
    from_variant: str | None = None  # reuse another variant's Stage I; "none" skips Stage I (Table 12)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class GanConfig:
    start: int = 20_000
    lr: float = 1e-4
    lecam: float = 0.001
    channels: int = 128
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4, 4, 4])


@dataclass
class Stage2Config:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=100_000, batch_size=64))
    lambda_p: float = 0.1
    lambda_g: float = 0.1
    perceptual: list[Literal["lpips", "resnet"]] = field(default_factory=lambda: ["lpips", "resnet"])
    resnet_size: int = 224
    gan: GanConfig = field(default_factory=GanConfig)
    freeze_encoder: bool = True


@dataclass
class FlowSamplerConfig:
    steps: int = 25
    shift: float = 1.0


@dataclass
class TokenizerConfig:
    bits: int = 18
    num_tokens: int = 256
    patch_size: int = 2
    quantizer: Literal["bsq", "lfq"] = "bsq"
    encoder: EncoderArch = field(default_factory=EncoderArch)
    decoder: DecoderArch = field(default_factory=DecoderArch)
    entropy: EntropyConfig = field(default_factory=EntropyConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    sampler: FlowSamplerConfig = field(default_factory=FlowSamplerConfig)
    dump_batch_size: int = 128


# ----------------------------------------------------------------------------------------------
# Generator (SPEC §4)


@dataclass
class GeneratorArch:
    size: str = "L"  # a key of `sizes`
    head: Literal["bitwise", "groups2"] = "bitwise"
    causal: bool = False  # raster variant: next-token prediction


@dataclass
class MaskConfig:
    min_ratio: float = 0.7
    max_ratio: float = 1.0
    dist: Literal["uniform", "truncnorm"] = "uniform"


@dataclass
class SampleConfig:
    steps: int = 64
    order: Literal["random", "confidence"] = "random"
    top_p: float = 0.75
    cfg_scale: float = 6.0
    cfg_schedule: Literal["linear", "constant"] = "linear"
    temperature: float = 1.0
    choice_temperature: float = 4.5  # Gumbel noise of confidence order, annealed to 0 (MaskGIT)
    per_class: int = 50
    batch_size: int = 250
    chunk: int = 5000  # images per resumable chunk


@dataclass
class GeneratorConfig:
    tokenizer: str = "b18"  # the tokenizer variant whose tokens it models
    arch: GeneratorArch = field(default_factory=GeneratorArch)
    sizes: dict[str, list[int]] = field(
        default_factory=lambda: {"L": [24, 1024, 16], "XL": [36, 1280, 20], "XXL": [24, 2048, 32]}
    )  # name -> [depth, width, heads] (Table 9)
    mask: MaskConfig = field(default_factory=MaskConfig)
    label_smoothing: float = 0.01
    class_dropout: float = 0.1
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            steps=800_000, batch_size=2048, lr=2e-4, weight_decay=0.03, betas=[0.9, 0.95], warmup=10_000
        )
    )
    sample: SampleConfig = field(default_factory=SampleConfig)


# ----------------------------------------------------------------------------------------------
# Evaluation (SPEC §5, §6)


@dataclass
class SweepConfig:
    generator: str = "ar-l"
    cfg_linear: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    cfg_constant: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 2.5, 3.0, 4.0])
    steps: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    top_p: list[float] = field(default_factory=lambda: [0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0])


@dataclass
class EvalConfig:
    recon_images: int = 50_000  # val images for rFID/PSNR/SSIM/LPIPS (capped at the val size)
    batch_size: int = 64
    # ADM's reference batch (arr_0 images, mu/sigma), a local path or a URL that `prefetch` downloads:
    # gFID against its mu/sigma, precision/recall against its images. None: the validation images.
    fid_reference: str | None = None
    classifier: str = "IMAGENET1K_V2"  # class_acc: torchvision ResNet50_Weights with real Inception
    fid_extractor: Literal["inception", "classifier"] = "inception"
    pr_k: int = 3
    sweeps: SweepConfig = field(default_factory=SweepConfig)
    tsne_images: int = 2000
    grid_images: int = 8


# ----------------------------------------------------------------------------------------------


@dataclass
class Config:
    run_id: str = "paper"
    out_dir: str = "results"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generator_variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    overrides: list[str] = field(default_factory=list)  # "a.b.c=value" pairs, applied at load

    # -- variants ------------------------------------------------------------------------------
    def tokenizer_variant(self, name: str) -> TokenizerConfig:
        """The base tokenizer section with variant `name`'s overrides merged and validated."""
        return _variant(self.tokenizer, self.tokenizer_variants, name, "tokenizer_variants")

    def generator_variant(self, name: str) -> GeneratorConfig:
        return _variant(self.generator, self.generator_variants, name, "generator_variants")

    def stage1_source(self, name: str) -> str | None:
        """The variant whose Stage I weights `name` starts Stage II from (None: no Stage I)."""
        src = self.tokenizer_variant(name).stage1.from_variant
        if src == "none":
            return None
        return name if src is None else self.stage1_source(src)

    @property
    def out(self) -> Path:
        return Path(self.out_dir)


def _variant(base: Any, variants: dict[str, dict[str, Any]], name: str, where: str) -> Any:
    if name not in variants:
        raise ConfigError(f"{where}: no variant {name!r}; known: {sorted(variants)}")
    merged = _deep_merge(dataclasses.asdict(base), variants[name])
    return _build(type(base), merged, f"{where}.{name}")


# ----------------------------------------------------------------------------------------------
# Loading and validation


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _is_free_dict_key(key):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _is_free_dict_key(key: str) -> bool:
    # Architecture kwargs are replaced as a whole, never merged key by key.
    return key in {"arch", "transformer"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of str to {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return tp.__name__


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against type `tp`; return it converted (int → float where a float is expected)."""
    origin = typing.get_origin(tp)
    fail = ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} ({value!r})")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail
        return _build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise fail
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(arg, value, key)
            except ConfigError:
                continue
        raise fail
    if origin is list:
        if not isinstance(value, list):
            raise fail
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail
        _, item = typing.get_args(tp)
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise fail
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise fail
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {key}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{path}: unknown key{hint}")
        kwargs[key] = _convert(hints[key], value, path)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' → (['a', 'b', 'c'], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key component")
    return parts, yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part} is not a mapping")
        node[parts[-1]] = value
    return out


def from_dict(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Validate a raw mapping (e.g. Snakemake's `config`) into a typed Config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(raw.get("overrides", [])) + list(overrides or []))
    cfg = _build(Config, raw, "")
    for name in cfg.tokenizer_variants:
        cfg.tokenizer_variant(name)
        cfg.stage1_source(name)  # resolves chains, catches unknown names
    for name in cfg.generator_variants:
        gen = cfg.generator_variant(name)
        if gen.tokenizer not in cfg.tokenizer_variants:
            raise ConfigError(
                f"generator_variants.{name}.tokenizer: unknown tokenizer variant {gen.tokenizer!r}"
            )
        if gen.arch.size not in gen.sizes:
            raise ConfigError(f"generator_variants.{name}.arch.size: {gen.arch.size!r} not in sizes")
    if cfg.evaluation.sweeps.generator not in cfg.generator_variants:
        raise ConfigError(
            f"evaluation.sweeps.generator: unknown generator variant {cfg.evaluation.sweeps.generator!r}"
        )
    return cfg


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    try:
        return from_dict(raw, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def section_hash(*sections: Any) -> str:
    """A short stable hash of config sections (rule params, CSV `config_hash`)."""
    blob = json.dumps(
        [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sections], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# JSON schema (workflow/schemas/config.schema.json)


def _schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return {}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: _schema(hints[f.name]) for f in dataclasses.fields(tp)},
        }
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in typing.get_args(tp)]}
    if origin is list:
        return {"type": "array", "items": _schema(typing.get_args(tp)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(typing.get_args(tp)[1])}
    simple = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": simple[tp]}


def json_schema() -> dict[str, Any]:
    schema = _schema(Config)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = "semtok experiment configuration (generated from semtok/config.py)"
    return schema
