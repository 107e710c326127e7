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
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of its range; the message
    names the key."""


SEED_MAX = 2**32 - 1
MAX_BITS = 62  # bits of a token index that fit an int64 (a sign bit and a margin; semtok/models/quantizer.py)


@dataclass(frozen=True)
class Bounds:
    """The valid range of a setting: numbers within [ge, le] and beyond gt / below lt; for a list
    (or the lists of a mapping) also its length. Applied to every number of a list or mapping."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    length: int | None = None
    min_length: int | None = None

    def describe(self) -> str:
        ops = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
        return " and ".join(f"{op} {v}" for op, v in ops if v is not None)

    def contains(self, x: float) -> bool:
        return (
            (self.ge is None or x >= self.ge)
            and (self.gt is None or x > self.gt)
            and (self.le is None or x <= self.le)
            and (self.lt is None or x < self.lt)
        )

    def check(self, value: Any, key: str) -> None:
        """Raise ConfigError naming `key` (and the list index or mapping key) if `value` is out of range."""
        if isinstance(value, dict):
            for k, v in value.items():
                self.check(v, f"{key}.{k}")
            return
        if isinstance(value, (list, str)):
            n = len(value)
            if self.length is not None and n != self.length:
                raise ConfigError(f"{key}: expected {self.length} values, got {n} ({value!r})")
            if self.min_length is not None and n < self.min_length:
                unit = "character" if isinstance(value, str) else "item"
                raise ConfigError(f"{key}: must have at least {self.min_length} {unit}(s), got {value!r}")
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self.check(v, f"{key}[{i}]")
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not self.contains(value):
            raise ConfigError(f"{key}: must be {self.describe()}, got {value!r}")

    def schema(self) -> dict[str, Any]:
        """JSON-schema keywords of the numeric bounds."""
        names = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
        return {names[k]: getattr(self, k) for k in names if getattr(self, k) is not None}


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **bounds: Any) -> Any:
    """A dataclass field with its valid range (`Bounds` keywords), checked at load time and exported to
    the JSON schema."""
    return field(default=default, default_factory=factory, metadata={"bounds": Bounds(**bounds)})


# ----------------------------------------------------------------------------------------------
# Data (SPEC §1)


@dataclass
class SyntheticConfig:
    """The built-in class-conditional dataset of shapes, colours and textures (ImageNet folder layout)."""

    num_classes: int = setting(10, ge=1)  # classes, each its own mix of shape, texture and palette
    train_per_class: int = setting(64, ge=1)  # training images of each class
    val_per_class: int = setting(16, ge=1)  # validation images of each class
    # images get random sizes in [min_size, max_size] to exercise resize + crop
    min_size: int = setting(72, ge=8)
    max_size: int = setting(120, ge=8)  # >= min_size
    seed: int = setting(0, ge=0, le=SEED_MAX)  # of the drawn images (independent of the run's seed)


@dataclass
class SubsetConfig:
    """A part of the dataset (null: all of it): the first `classes` classes in class order and, of each,
    the first images in key order. The paper-shape smoke run (config/paper-smoke.yaml) indexes a few
    images of a real ImageNet folder this way; the class count of the run is then `classes`."""

    classes: int | None = setting(None, ge=1)  # the first N classes (class order); null: all
    train_per_class: int | None = setting(None, ge=1)  # the first N train images of each class (key order)
    val_per_class: int | None = setting(None, ge=1)  # the first N validation images of each class


@dataclass
class DataConfig:
    source: Literal["synthetic", "imagenet"] = "imagenet"  # synthetic: the built-in dataset, under out_dir
    imagenet_root: str | None = None  # holds train/<wnid>/*.JPEG and val/ (per-class or flat)
    val_solution_csv: str | None = None  # flat val folder labels; default <root>/LOC_val_solution.csv
    subset: SubsetConfig = field(default_factory=SubsetConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    resolution: int = setting(256, ge=8)  # images: short side resized to this, centre-cropped square
    jpeg_quality: int = setting(95, ge=1, le=100)  # of the JPEGs in the image shards
    train_shards: int = setting(1282, ge=1)  # webdataset shards of the train split (a job each)
    val_shards: int = setting(50, ge=1)  # webdataset shards of the validation split
    precompute_siglip: bool = True  # False: SigLIP runs online inside the training job
    # a corrupt shard or sample at training time: stop, or skip it with a warning and a record
    on_corrupt_shard: Literal["fail", "skip"] = "fail"
    shuffle_buffer: int = setting(2000, ge=1)  # samples in the training loaders' shuffle buffer
    encode_batch_size: int = setting(64, ge=1)  # images a batch when pre-encoding latents and SigLIP features


# ----------------------------------------------------------------------------------------------
# Pretrained components (one registry, semtok/registry.py)


@dataclass
class ComponentConfig:
    """Where a frozen or initialising network comes from (`source`):

    - "pretrained": `id` is a hub id or a local path (real weights);
    - "bootstrap": a tiny model of the same class trained on the configured data by the `teachers`
      rule, then loaded exactly like real weights;
    - "random": a model of the same class built from `arch` with random init.
    """

    source: Literal["pretrained", "bootstrap", "random"] = "pretrained"
    id: str | None = None  # hub id or local path; torchvision weights name (resnet), LPIPS net (lpips)
    subfolder: str | None = None  # of the hub repository (the SD3.5 repository holds vae/ and transformer/)
    revision: str | None = None  # hub revision (branch, tag or commit); None = the default branch
    arch: dict[str, Any] = field(default_factory=dict)  # the model's constructor kwargs (bootstrap, random)
    train_steps: int = setting(0, ge=0)  # bootstrap only
    batch_size: int = setting(32, ge=1)  # bootstrap only
    lr: float = setting(1e-3, gt=0)  # bootstrap only


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
    steps: int = setting(200_000, ge=1)  # optimizer steps
    batch_size: int = setting(256, ge=1)  # global batch
    lr: float = setting(5e-5, gt=0)  # AdamW's peak learning rate
    weight_decay: float = setting(1e-3, ge=0)  # AdamW's
    betas: list[float] = setting(factory=lambda: [0.9, 0.99], ge=0, lt=1, length=2)  # AdamW's
    warmup: int = setting(10_000, ge=0)  # steps of linear warmup, then cosine decay
    min_lr_ratio: float = setting(0.0, ge=0, le=1)  # cosine floor as a fraction of lr
    grad_clip: float = setting(1.0, ge=0)  # 0 = no clipping
    ema: float = setting(0.9999, ge=0, lt=1)  # decay of the weights' moving average (the exported weights)
    ckpt_every: int = setting(2_000, ge=1)  # steps between resumable checkpoints
    keep_ckpts: int = setting(2, ge=1)  # newest checkpoints kept
    log_every: int = setting(50, ge=1)  # steps between logged scalars


@dataclass
class ComputeConfig:
    # cuda: stop at start where CUDA is not usable; cpu: the CPU on purpose; auto: CUDA when usable
    device: Literal["cuda", "cpu", "auto"] = "auto"
    # autocast of the transformers in training and inference, on GPU and CPU (conv nets stay float32)
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    compile: bool = True  # torch.compile of the transformer blocks (inductor, on GPU and CPU)
    grad_checkpointing: bool = True  # recompute the transformer blocks' activations in backward (memory)
    fused_adam: bool = True  # fused AdamW kernel (CPU and GPU; 3.5x faster optimizer step on CPU)
    allow_tf32: bool = True  # TF32 matmuls and convolutions on GPUs (float32 ones, e.g. the VAE's)
    num_workers: int = setting(8, ge=0)  # DataLoader worker processes of each training process
    threads: int = setting(0, ge=0)  # torch CPU threads; 0 = the job's CPUs (semtok/utils/devices.py)
    fsdp: bool = False  # several processes: FSDP2 sharding instead of DDP (semtok/train/fsdp.py)
    forkserver: bool = False  # local runs: jobs fork from a process that imported torch & co. once
    # accelerate's experiment trackers of every training job; "wandb" needs `pip install wandb`
    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])


# ----------------------------------------------------------------------------------------------
# Tokenizer (SPEC §2)


@dataclass
class EncoderArch:
    depth: int = setting(8, ge=1)  # joint (MMDiT) blocks
    width: int = setting(768, ge=1)  # of both streams
    heads: int = setting(12, ge=1)  # divides width
    mlp_ratio: float = setting(4.0, gt=0)  # MLP hidden width / width
    causal_1d: bool = False  # raster variant: 1D token i attends to tokens <= i only (Table 5)
    mode: Literal["1d", "grid2d"] = "1d"  # grid2d: quantize the image tokens themselves (2D baseline)


@dataclass
class DecoderArch:
    init: Literal["pretrained", "random"] = "pretrained"  # pretrained = the `sd3` registry entry
    # SD3Transformer2DModel kwargs: the architecture of a random init; with init "pretrained", checked
    # against the checkpoint's config (empty: not checked)
    transformer: dict[str, Any] = field(default_factory=dict)


@dataclass
class EntropyConfig:
    weight: float = setting(0.0025, ge=0)  # λ_q
    tau: float = setting(1.0, gt=0)  # temperature of the soft quantization the entropy is computed on
    group_size: int = setting(1, ge=1, le=16)  # divides tokenizer.bits; 2^g corners per group
    commit_weight: float = setting(0.25, ge=0)  # LFQ only


@dataclass
class SemanticConfig:
    weight: float = setting(0.05, ge=0)  # λ_s
    contrastive: bool = True  # L_contra: quantized tokens vs pooled SigLIP features (Table 4)
    distill: bool = True  # L_distill: image tokens vs SigLIP patch features (Table 4)
    distill_head: Literal["linear", "mlp"] = "linear"  # w_x, width -> SigLIP's feature width
    # hidden width of the contrastive head w_z (d -> embed_dim -> SigLIP's width)
    embed_dim: int = setting(512, ge=1)
    logit_scale_init: float = setting(1 / 0.07, gt=0)  # the contrastive loss's learnable scale (CLIP's init)
    logit_scale_max: float = setting(100.0, gt=0)  # >= logit_scale_init


@dataclass
class Stage1Config:
    from_variant: str | None = None  # reuse another variant's Stage I; "none" skips Stage I (Table 12)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class GanConfig:
    start: int = setting(20_000, ge=0)  # the Stage II step the adversarial loss starts at
    lr: float = setting(1e-4, gt=0)  # of the discriminator
    lecam: float = setting(0.001, ge=0)  # LeCam regularisation weight
    channels: int = setting(128, ge=1)  # the discriminator's first width
    channel_mults: list[int] = setting(factory=lambda: [1, 2, 4, 4, 4], ge=1, min_length=1)  # per resolution


@dataclass
class Stage2Config:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=100_000, batch_size=64))
    lambda_p: float = setting(0.1, ge=0)  # λ_p, the perceptual loss's weight
    lambda_g: float = setting(0.1, ge=0)  # λ_G, the adversarial loss's weight
    # the perceptual loss's terms: LPIPS and the ResNet logit loss (Table 11)
    perceptual: list[Literal["lpips", "resnet"]] = field(default_factory=lambda: ["lpips", "resnet"])
    resnet_size: int = setting(224, ge=32)  # images are resized to this for the ResNet logit loss
    gan: GanConfig = field(default_factory=GanConfig)
    freeze_encoder: bool = True  # encoder and quantizer frozen (tokens stay Stage I's); false: trained too


@dataclass
class FlowSamplerConfig:
    steps: int = setting(25, ge=1)  # Euler steps of Stage I's flow decoding
    shift: float = setting(1.0, gt=0)  # the flow-matching scheduler's timestep shift (1: none)


@dataclass
class TokenizerConfig:
    bits: int = setting(18, ge=1, le=MAX_BITS)  # d, the bits of a token: a codebook of 2^d
    num_tokens: int = setting(256, ge=1)  # K, the 1D tokens of an image
    patch_size: int = setting(2, ge=1)  # of the VAE latent: image tokens = (latent side / patch_size)^2
    quantizer: Literal["bsq", "lfq"] = "bsq"  # binary spherical quantization, or LFQ (Table 10)
    encoder: EncoderArch = field(default_factory=EncoderArch)
    decoder: DecoderArch = field(default_factory=DecoderArch)
    entropy: EntropyConfig = field(default_factory=EntropyConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    sampler: FlowSamplerConfig = field(default_factory=FlowSamplerConfig)
    dump_batch_size: int = setting(128, ge=1)  # images a batch when dumping tokens for the generator
    # added to the run's seed for this variant's training and flow decoding (seed replicas, report.claims)
    seed_offset: int = setting(0, ge=0, le=SEED_MAX)


# ----------------------------------------------------------------------------------------------
# Generator (SPEC §4)


@dataclass
class GeneratorArch:
    size: str = "L"  # a key of `sizes`
    # d binary classifiers, or two over 2^(d/2) indices each (Table 13)
    head: Literal["bitwise", "groups2"] = "bitwise"
    causal: bool = False  # raster variant: next-token prediction


@dataclass
class MaskConfig:
    min_ratio: float = setting(0.7, gt=0, le=1)  # a training sample masks a ratio r of its tokens
    max_ratio: float = setting(1.0, gt=0, le=1)  # >= min_ratio
    dist: Literal["uniform", "truncnorm"] = "uniform"  # of r: uniform, or MAR's truncated normal


@dataclass
class SampleConfig:
    steps: int = setting(64, ge=1)  # N forward passes (at most num_tokens)
    order: Literal["random", "confidence"] = "random"  # which masked tokens each step commits (Table 14)
    top_p: float = setting(0.75, gt=0, le=1)  # per-bit top-p filtering
    cfg_scale: float = setting(6.0, ge=0)  # classifier-free guidance scale (the maximum under "linear")
    cfg_schedule: Literal["linear", "constant"] = "linear"  # linear: 1 -> cfg_scale as tokens are known
    temperature: float = setting(1.0, gt=0)  # of the per-bit logits
    # Gumbel noise of confidence order, annealed to 0 (MaskGIT)
    choice_temperature: float = setting(4.5, ge=0)
    per_class: int = setting(50, ge=1)  # samples of every class (the paper: 50 x 1000 classes = 50k)
    batch_size: int = setting(250, ge=1)  # images a forward batch
    chunk: int = setting(5000, ge=1)  # images per resumable chunk


@dataclass
class GeneratorConfig:
    tokenizer: str = "b18"  # the tokenizer variant whose tokens it models
    arch: GeneratorArch = field(default_factory=GeneratorArch)
    sizes: dict[str, list[int]] = setting(
        factory=lambda: {"L": [24, 1024, 16], "XL": [36, 1280, 20], "XXL": [24, 2048, 32]}, ge=1, length=3
    )  # name -> [depth, width, heads] (Table 9); heads divides width
    mask: MaskConfig = field(default_factory=MaskConfig)
    label_smoothing: float = setting(0.01, ge=0, lt=1)  # of the per-bit cross-entropy
    class_dropout: float = setting(0.1, ge=0, lt=1)  # share of samples trained with the null class (for CFG)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            steps=800_000, batch_size=2048, lr=2e-4, weight_decay=0.03, betas=[0.9, 0.95], warmup=10_000
        )
    )
    sample: SampleConfig = field(default_factory=SampleConfig)
    # added to the run's seed for this variant's training and sampling (seed replicas, report.claims)
    seed_offset: int = setting(0, ge=0, le=SEED_MAX)


# ----------------------------------------------------------------------------------------------
# Evaluation (SPEC §5, §6)


@dataclass
class SweepConfig:
    generator: str = "ar-l"  # the generator variant the sweeps sample
    # CFG scales of the linear schedule (Fig. 7)
    cfg_linear: list[float] = setting(factory=lambda: [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], ge=0)
    cfg_constant: list[float] = setting(factory=lambda: [1.0, 1.5, 2.0, 2.5, 3.0, 4.0], ge=0)  # Fig. 8
    steps: list[int] = setting(factory=lambda: [8, 16, 32, 64, 128], ge=1)  # sampling steps (Fig. 9)
    # per-bit top-p (Fig. 10)
    top_p: list[float] = setting(factory=lambda: [0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0], gt=0, le=1)


@dataclass
class EvalConfig:
    recon_images: int = setting(50_000, ge=1)  # val images for rFID/PSNR/SSIM/LPIPS (capped at the val size)
    batch_size: int = setting(64, ge=1)  # images a batch of the evaluation jobs
    # ADM's reference batch (arr_0 images, mu/sigma), a local path or a URL that `prefetch` downloads:
    # gFID against its mu/sigma, precision/recall against its images. None: the validation images.
    # "standin": random images in its layout, written by the workflow (offline runs at the paper's shapes).
    fid_reference: str | None = None
    classifier: str = "IMAGENET1K_V2"  # class_acc: torchvision ResNet50_Weights with real Inception
    # not read: the features follow pretrained.inception.source (pretrained: Inception; bootstrap: the
    # stand-in classifier)
    fid_extractor: Literal["inception", "classifier"] = "inception"
    pr_k: int = setting(3, ge=1)  # neighbours of precision/recall
    sweeps: SweepConfig = field(default_factory=SweepConfig)
    tsne_images: int = setting(2000, ge=2)  # validation images whose encoder features Fig. 6 embeds
    grid_images: int = setting(8, ge=1)  # images kept for the reconstruction and sample grids


# ----------------------------------------------------------------------------------------------
# Report (SPEC §6): which variant plays each role of the paper's tables and figures


@dataclass
class TokenizerRoles:
    """The tokenizer variant of each role that the paper's rows and panels name (semtok/report/spec.py
    gives each role its label and says where it appears). Renaming a variant means renaming it here too."""

    semtok: str = "b18"  # SemTok 2^18: the reference row of every ablation
    semtok_b32: str = "b32"  # SemTok 2^32 (Tables 1, 6)
    lfq: str = "lfq"  # LFQ instead of BSQ (Table 10)
    no_contrastive: str = "no-contra"  # distillation only (Table 4, Fig. 6)
    no_distillation: str = "no-distill"  # contrastive only (Table 4, Fig. 6)
    no_semantics: str = "no-sem"  # no semantic constraint (Table 4, Figs. 3, 6)
    raster: str = "raster"  # raster-ordered 1D tokens (Table 5)
    grid2d: str = "grid2d"  # the 2D-grid baseline (Fig. 3)
    finetune_only: str = "finetune-only"  # no generative pre-training (Table 12)
    lpips_only: str = "lpips-only"  # perceptual loss LPIPS only (Table 11)
    resnet_only: str = "resnet-only"  # perceptual loss ResNet only (Table 11)


@dataclass
class GeneratorRoles:
    """The generator variant of each role that the paper's rows and panels name."""

    ar_l: str = "ar-l"  # SemTok-AR-L, the reference row of the generation ablations
    ar_xl: str = "ar-xl"  # SemTok-AR-XL (Table 2)
    ar_xxl: str = "ar-xxl"  # SemTok-AR-XXL (Table 2)
    groups2: str = "ar-l-groups2"  # two classifiers over 2^(d/2) indices (Table 13)
    no_contrastive: str = "ar-l-no-contra"  # on the no_contrastive tokenizer (Table 4)
    no_distillation: str = "ar-l-no-distill"  # on the no_distillation tokenizer (Table 4)
    no_semantics: str = "ar-l-no-sem"  # on the no_semantics tokenizer (Tables 3, 4; Fig. 4)
    raster: str = "ar-l-raster"  # next-token prediction on raster tokens (Table 5, Fig. 5)
    grid2d: str = "ar-l-grid2d"  # on the 2D-grid tokenizer (Table 3, Figs. 4, 5)


@dataclass
class ClaimsConfig:
    """The claims table (semtok/report/claims.py). Its noise is the seed-to-seed spread of the main
    tokenizer (role `semtok`) and generator (role `ar_l`): the replicas are variants equal to those
    except for `seed_offset` (a generator replica models the main tokenizer or one of its replicas).
    A comparison the paper states for reconstruction or generation in general is decided by
    `reconstruction_metric` or `generation_metric`; a verdict needs an effect beyond `z` times its noise."""

    tokenizer_replicas: list[str] = field(default_factory=list)
    generator_replicas: list[str] = field(default_factory=list)
    reconstruction_metric: Literal["PSNR", "SSIM", "LPIPS", "rFID", "class_acc"] = "PSNR"
    generation_metric: Literal["gFID", "IS", "Precision", "Recall", "class_acc"] = "gFID"
    z: float = setting(2.0, gt=0)


@dataclass
class ReportConfig:
    tokenizers: TokenizerRoles = field(default_factory=TokenizerRoles)
    generators: GeneratorRoles = field(default_factory=GeneratorRoles)
    claims: ClaimsConfig = field(default_factory=ClaimsConfig)


# ----------------------------------------------------------------------------------------------


@dataclass
class Config:
    run_id: str = setting("paper", min_length=1)  # names the run in tables, trackers and CSVs
    out_dir: str = setting("results", min_length=1)  # every artefact of the run (semtok/paths.py)
    seed: int = setting(0, ge=0, le=SEED_MAX)  # of every training, sampling and evaluation job
    data: DataConfig = field(default_factory=DataConfig)
    pretrained: PretrainedConfig = field(default_factory=PretrainedConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    # name -> partial overrides of `tokenizer` (the ablations' tokenizers)
    tokenizer_variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    # name -> partial overrides of `generator` (the model sizes and the ablations' generators)
    generator_variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    overrides: list[str] = field(default_factory=list)  # "a.b.c=value" pairs, applied at load

    # -- variants ------------------------------------------------------------------------------
    def tokenizer_variant(self, name: str) -> TokenizerConfig:
        """The base tokenizer section with variant `name`'s overrides merged and validated."""
        return _variant(self.tokenizer, self.tokenizer_variants, name, "tokenizer_variants")

    def generator_variant(self, name: str) -> GeneratorConfig:
        return _variant(self.generator, self.generator_variants, name, "generator_variants")

    def variant_seed(self, section: TokenizerConfig | GeneratorConfig) -> int:
        """The seed of a variant's training, sampling and flow decoding: the run's seed plus the
        variant's `seed_offset` (0 but for seed replicas)."""
        return self.seed + section.seed_offset

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

# Relations between settings that a range cannot express: (section, key named in the error, test, message).
RELATIONS: list[tuple[type, str, Any, str]] = [
    (SyntheticConfig, "max_size", lambda c: c.max_size >= c.min_size, "must be >= min_size"),
    (
        ComponentConfig,
        "train_steps",
        lambda c: c.source != "bootstrap" or c.train_steps >= 1,
        "must be >= 1 when source is 'bootstrap'",
    ),
    (EncoderArch, "heads", lambda c: c.width % c.heads == 0, "must divide width"),
    (
        TokenizerConfig,
        "entropy.group_size",
        lambda c: c.bits % c.entropy.group_size == 0,
        "must divide tokenizer.bits",
    ),
    (
        SemanticConfig,
        "logit_scale_max",
        lambda c: c.logit_scale_max >= c.logit_scale_init,
        "must be >= logit_scale_init",
    ),
    (MaskConfig, "max_ratio", lambda c: c.max_ratio >= c.min_ratio, "must be >= min_ratio"),
    (
        GeneratorConfig,
        "sizes",
        lambda c: all(width % heads == 0 for _, width, heads in c.sizes.values()),
        "heads (third value) must divide width (second value)",
    ),
]


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a schema class (resolved once: variants are built thousands of times
    when the paper's DAG is planned)."""
    return typing.get_type_hints(cls)


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
        # YAML 1.1 reads an unquoted `no` (`mixed_precision: no`) as false: the choice the user wrote
        if isinstance(value, bool) and {False: "no", True: "yes"}[value] in typing.get_args(tp):
            return {False: "no", True: "yes"}[value]
        if isinstance(value, bool) or value not in typing.get_args(tp):
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
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {key}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            raise ConfigError(f"{path}: unknown key{hint}")
        kwargs[key] = _convert(hints[key], value, path)
        if "bounds" in fields[key].metadata:
            fields[key].metadata["bounds"].check(kwargs[key], path)
    obj = cls(**kwargs)
    for kind, key, holds, message in RELATIONS:
        if isinstance(obj, kind) and not holds(obj):
            raise ConfigError(f"{prefix + '.' if prefix else ''}{key}: {message}")
    return obj


def check_argument(value: Any, argument: str, section: type, name: str | None = None) -> Any:
    """A function argument checked like field `name` (default: `argument`) of config dataclass
    `section` is checked at load time: its type and its range (the field's `setting` bounds), so that an
    API and the config accept the same values. A numpy or torch scalar counts as its Python number.
    Returns the value (an int given for a float as a float); raises ConfigError naming the argument, the
    value and the allowed range or type."""
    field_ = {f.name: f for f in dataclasses.fields(section)}[name or argument]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    value = _convert(typing.get_type_hints(section)[field_.name], value, argument)
    if "bounds" in field_.metadata:
        field_.metadata["bounds"].check(value, argument)
    return value


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
    """A config file: YAML, or JSON (a `.json` file, such as the resolved settings the workflow writes)."""
    with open(path) as f:
        raw = (json.load(f) if str(path).endswith(".json") else yaml.safe_load(f)) or {}
    try:
        return from_dict(raw, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def merge_files(paths: list[str | Path]) -> dict[str, Any]:
    """Config files merged as Snakemake merges several `--configfile`s: later files update earlier ones,
    mapping by mapping (an overlay such as config/paper-smoke.yaml changes single keys)."""

    def update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        for key, value in new.items():
            base[key] = (
                update(base[key], value)
                if isinstance(value, dict) and isinstance(base.get(key), dict)
                else value
            )
        return base

    merged: dict[str, Any] = {}
    for path in paths:
        with open(path) as f:
            update(merged, yaml.safe_load(f) or {})
    return merged


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _float_text(x: float) -> str:
    """`repr(x)` with a decimal point in the mantissa: 5e-05 → "5.0e-05". YAML 1.1 readers (PyYAML's
    safe_load) read a number without a point as a string; JSON readers accept both."""
    mantissa, e, exponent = repr(x).partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent


def _json_text(value: Any, depth: int) -> str:
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (f"{inner}{json.dumps(str(k))}: {_json_text(value[k], depth + 1)}" for k in sorted(value))
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(f"{inner}{_json_text(v, depth + 1)}" for v in value) + f"\n{pad}]"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write the non-finite value {value!r}")
        return _float_text(value)
    return json.dumps(value)


def dumps(cfg: Config) -> str:
    """The resolved settings as JSON (sorted keys) that every reader reads back exactly: `json.load` and
    YAML readers alike (floats always carry a decimal point; strings are quoted)."""
    return _json_text(to_dict(cfg), 0) + "\n"


def section_hash(*sections: Any) -> str:
    """A short stable hash of config sections (rule params, CSV `config_hash`)."""
    blob = json.dumps(
        [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sections], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------
# JSON schema (workflow/schemas/config.schema.json)


def _schema(tp: Any, bounds: Bounds = Bounds()) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return {}
    if dataclasses.is_dataclass(tp):
        hints = _type_hints(tp)
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                f.name: _schema(hints[f.name], f.metadata.get("bounds", Bounds()))
                for f in dataclasses.fields(tp)
            },
        }
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema(a, bounds) for a in typing.get_args(tp)]}
    if origin is list:
        schema = {"type": "array", "items": _schema(typing.get_args(tp)[0], bounds)}
        return schema | _length_schema(bounds, "Items")
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(typing.get_args(tp)[1], bounds)}
    if tp in (int, float):
        return {"type": "integer" if tp is int else "number"} | bounds.schema()
    if tp is str:
        return {"type": "string"} | _length_schema(bounds, "Length")
    return {"type": {type(None): "null", bool: "boolean"}[tp]}


def _length_schema(bounds: Bounds, what: str) -> dict[str, int]:
    """minItems/maxItems (what="Items") or minLength/maxLength (what="Length") of `bounds`."""
    low = bounds.length if bounds.length is not None else bounds.min_length
    out = {f"min{what}": low} if low is not None else {}
    return out | ({f"max{what}": bounds.length} if bounds.length is not None else {})


def json_schema() -> dict[str, Any]:
    schema = _schema(Config)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = "semtok experiment configuration (generated from semtok/config.py)"
    return schema
