"""The settings key of every job of the DAG: exactly the config values that can change what it writes.

A rule puts its job's key in `params.cfg`, so Snakemake reruns the job when the key changes; a
training job records it in its checkpoints (semtok/train/loop.py), so a run resumes only from a
checkpoint written under the same key; an evaluation job writes it as the `config_hash` of its metric
rows. One function per job, used by all three, so they cannot disagree.

A key holds the job's own settings and the keys of the jobs whose outputs it reads (a change upstream
reruns it through its input files anyway; the key then also names the whole provenance of a metric).
What is in no key changes how a job runs, not what it computes, and reruns nothing:
- compute: device, compile, grad_checkpointing, fused_adam, num_workers, threads, fsdp, forkserver,
  trackers (they change floating-point rounding at most; `mixed_precision` and `allow_tf32` change the
  arithmetic and are in the keys of the jobs that compute under them);
- every optimiser's `log_every` and `keep_ckpts` (`ckpt_every` stays: it cuts the data stream into the
  segments a resumed run replays);
- evaluation.batch_size, data.encode_batch_size, tokenizer.dump_batch_size, run_id, out_dir;
- another job's settings: Stage II settings never key Stage I, sampling settings never key a
  generator's training, a sweep value keys only its own sampling point.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from semtok.config import ComputeConfig, Config, DataConfig, OptimConfig, TokenizerConfig, section_hash
from semtok.sampling.settings import PROGRESSIVE, sample_config

# what a job computes but not what it is: never in a key
NOT_IN_OPTIM = ("log_every", "keep_ckpts")


def digest(key: dict[str, Any]) -> str:
    """The short hash of a key (rule params, checkpoint meta, metric `config_hash`)."""
    return section_hash(key)


def hparams(key: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A key as the flat scalars experiment trackers take (`stage2/optim/lr`; lists and None as text)."""
    out: dict[str, bool | int | float | str] = {}
    for name, value in key.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out |= hparams(value, f"{path}/")
        elif isinstance(value, (bool, int, float, str)):
            out[path] = value
        else:
            out[path] = json.dumps(value)
    return out


def optim(o: OptimConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(o).items() if k not in NOT_IN_OPTIM}


def numerics(compute: ComputeConfig) -> dict[str, Any]:
    """The compute settings that change the arithmetic of a job that runs models."""
    return {"mixed_precision": compute.mixed_precision, "allow_tf32": compute.allow_tf32}


def data_stream(data: DataConfig) -> dict[str, Any]:
    """The loader settings that change which samples a training step sees."""
    return {
        "shuffle_buffer": data.shuffle_buffer,
        "on_corrupt_shard": data.on_corrupt_shard,
        "precompute_siglip": data.precompute_siglip,
    }


def _model(t: TokenizerConfig) -> dict[str, Any]:
    """The tokenizer's architecture and encoder-side losses (both stages build the model from them)."""
    fields = ("bits", "num_tokens", "patch_size", "quantizer", "encoder", "decoder", "entropy", "semantic")
    full = dataclasses.asdict(t)
    return {f: full[f] for f in fields}


def _frozen(cfg: Config, *names: str) -> dict[str, Any]:
    """The pretrained components a job runs (their weights or random init from the run's seed)."""
    return {name: dataclasses.asdict(getattr(cfg.pretrained, name)) for name in names}


def _tokenizer_frozen(
    cfg: Config, t: TokenizerConfig, *, semantic: bool, from_init: bool, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The frozen parts a tokenizer stage runs: the VAE (its latents' normalisation, its decoder),
    SD3.5's transformer when the stage builds the decoder from it (`from_init`: not from a Stage I) with
    `decoder.init: pretrained`, SigLIP when a semantic loss trains (`semantic`), and `extra`."""
    names = ["vae"]
    if from_init and t.decoder.init == "pretrained":
        names.append("sd3")
    if semantic and (t.semantic.contrastive or t.semantic.distill):
        names.append("siglip")
    return _frozen(cfg, *names, *extra)


# -- data -----------------------------------------------------------------------------------------


def synthetic(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg.data.synthetic)


def index(cfg: Config, split: str) -> dict[str, Any]:
    d = cfg.data
    return {
        "source": d.source,
        "root": d.imagenet_root,
        "val_solution_csv": d.val_solution_csv if split == "val" else None,
        "classes": d.subset.classes,
        "per_class": getattr(d.subset, f"{split}_per_class"),
        "shards": d.train_shards if split == "train" else d.val_shards,
    }


def shard(cfg: Config) -> dict[str, Any]:
    return {"resolution": cfg.data.resolution, "jpeg_quality": cfg.data.jpeg_quality}


def teacher(cfg: Config, name: str) -> dict[str, Any]:
    return {
        "component": dataclasses.asdict(getattr(cfg.pretrained, name)),
        "resolution": cfg.data.resolution,
        "data": data_stream(cfg.data),
        "numerics": numerics(cfg.compute),
        "seed": cfg.seed,
    }


def encode(cfg: Config, kind: str) -> dict[str, Any]:
    """kind "latents" (the VAE) or "siglip"."""
    name = {"latents": "vae", "siglip": "siglip"}[kind]
    return {
        "component": _frozen(cfg, name),
        "resolution": cfg.data.resolution,
        "numerics": numerics(cfg.compute),
    }


# -- tokenizer ------------------------------------------------------------------------------------


def stage1(cfg: Config, variant: str) -> dict[str, Any]:
    """Stage I of a variant that trains its own (the decoder's init, the latents' normalisation and the
    SigLIP teacher are the frozen parts it runs)."""
    t = cfg.tokenizer_variant(variant)
    return {
        "model": _model(t),
        "stage1": {"from_variant": t.stage1.from_variant, "optim": optim(t.stage1.optim)},
        "frozen": _tokenizer_frozen(cfg, t, semantic=True, from_init=True),
        "data": data_stream(cfg.data),
        "numerics": numerics(cfg.compute),
        "seed": cfg.variant_seed(t),  # the run's seed plus the variant's seed_offset
    }


def stage2(cfg: Config, variant: str) -> dict[str, Any]:
    """Stage II of a variant: its own Stage II settings on top of the Stage I it starts from."""
    t = cfg.tokenizer_variant(variant)
    source = cfg.stage1_source(variant)
    s2 = dataclasses.asdict(t.stage2) | {"optim": optim(t.stage2.optim)}
    return {
        "model": _model(t),
        "stage1": None if source is None else stage1(cfg, source),
        "stage2": s2,
        "frozen": _tokenizer_frozen(
            cfg,
            t,
            semantic=not t.stage2.freeze_encoder,
            from_init=source is None,
            extra=tuple(t.stage2.perceptual),
        ),
        "data": data_stream(cfg.data),
        "numerics": numerics(cfg.compute),
        "seed": cfg.variant_seed(t),
    }


def tokens(cfg: Config, variant: str) -> dict[str, Any]:
    """The token dump of one shard by a variant's Stage II tokenizer (fp32, no autocast)."""
    return {"tokenizer": stage2(cfg, variant)}


# -- generator ------------------------------------------------------------------------------------


def generator(cfg: Config, variant: str) -> dict[str, Any]:
    """Training a generator variant: everything of its section but the sampler, and its tokens."""
    g = cfg.generator_variant(variant)
    return {
        "tokenizer": tokens(cfg, g.tokenizer),
        "arch": dataclasses.asdict(g.arch),
        "dims": g.sizes[g.arch.size],
        "mask": dataclasses.asdict(g.mask),
        "label_smoothing": g.label_smoothing,
        "class_dropout": g.class_dropout,
        "optim": optim(g.optim),
        "numerics": numerics(cfg.compute),
        "seed": cfg.variant_seed(g),
    }


def sample(cfg: Config, variant: str, setting: str) -> dict[str, Any]:
    """One sampling setting of a generator: its resolved sampler settings (a sweep point changes only
    its own field), the seeds, and what the progressive setting draws."""
    return {
        "generator": generator(cfg, variant),
        "sample": dataclasses.asdict(sample_config(cfg, variant, setting)),
        "grid_images": cfg.evaluation.grid_images if setting == PROGRESSIVE else None,
        "numerics": numerics(cfg.compute),
        "seed": cfg.variant_seed(cfg.generator_variant(variant)),
    }


# -- evaluation -----------------------------------------------------------------------------------


def _metrics(cfg: Config) -> dict[str, Any]:
    """The networks and references every metric of a run is measured with."""
    e = cfg.evaluation
    return {
        "inception": dataclasses.asdict(cfg.pretrained.inception),
        "classifier": e.classifier,
        "fid_reference": e.fid_reference,
        "seed": cfg.seed,  # random stand-ins are drawn from it
    }


def reference(cfg: Config) -> dict[str, Any]:
    """The validation features (and the generation reference's) that every FID/PR is measured against."""
    return {
        "metrics": _metrics(cfg),
        "recon_images": cfg.evaluation.recon_images,
        "resolution": cfg.data.resolution,
    }


def reference_standin(cfg: Config) -> dict[str, Any]:
    return {"inception": _metrics(cfg)["inception"], "resolution": cfg.data.resolution, "seed": cfg.seed}


def recon(cfg: Config, variant: str | None, mode: str) -> dict[str, Any]:
    """Reconstruction metrics of a tokenizer variant (mode "refiner" or "diffusion": its Euler sampler)
    or of the frozen VAE (variant None, mode "vae"), with the examples and features the job writes."""
    e = cfg.evaluation
    if variant is None:
        model: dict[str, Any] = {"vae": _frozen(cfg, "vae")}
    elif mode == "diffusion":
        source = cfg.stage1_source(variant)
        model = {
            "stage1": None if source is None else stage1(cfg, source),
            "sampler": dataclasses.asdict(cfg.tokenizer_variant(variant).sampler),
            "seed": cfg.variant_seed(cfg.tokenizer_variant(variant)),  # the flow's noise
        }
    else:
        model = {"stage2": stage2(cfg, variant)}
    return {
        "model": model,
        "reference": reference(cfg),
        "lpips_metric": _frozen(cfg, "lpips_metric"),
        "outputs": {
            "grid_images": e.grid_images,
            "tsne_images": e.tsne_images if mode == "refiner" else None,
        },
        "numerics": numerics(cfg.compute),
    }


def gen(cfg: Config, variant: str, setting: str) -> dict[str, Any]:
    """Generation metrics of one sample file."""
    return {"sample": sample(cfg, variant, setting), "reference": reference(cfg), "pr_k": cfg.evaluation.pr_k}
