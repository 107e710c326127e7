"""Settings keys (semtok/keys.py): which jobs' keys a config change touches, job by job, over every job of
the default DAG. The same table is checked against `snakemake -n` on a finished run in
tests/workflow/test_rerun.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from semtok import keys
from semtok.config import from_dict
from semtok.report import spec

ROOT = Path(__file__).resolve().parents[1]
TOKENIZERS = [
    "b18",
    "b32",
    "lfq",
    "no-contra",
    "no-distill",
    "no-sem",
    "raster",
    "grid2d",
    "finetune-only",
    "lpips-only",
    "resnet-only",
    "b18-seed1",  # the seed replica (report.claims)
]
OWN_STAGE1 = ["b18", "b32", "lfq", "no-contra", "no-distill", "no-sem", "raster", "grid2d", "b18-seed1"]
GENERATORS = [
    "ar-l",
    "ar-xl",
    "ar-xxl",
    "ar-l-groups2",
    "ar-l-no-sem",
    "ar-l-no-contra",
    "ar-l-no-distill",
    "ar-l-raster",
    "ar-l-grid2d",
    "ar-l-seed1",
]


def config(*overrides: str):
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    return from_dict(raw, list(overrides))


def jobs(cfg) -> dict[tuple, str]:
    """Every job of the default DAG (its key function and arguments) → its key's digest: tokens are
    dumped for the generators' tokenizers only, generation metrics computed where a table or figure
    reads them (a figure's progressive samples have none)."""
    out = {
        ("synthetic",): keys.synthetic(cfg),
        ("shard",): keys.shard(cfg),
        ("reference",): keys.reference(cfg),
    }
    out |= {("index", s): keys.index(cfg, s) for s in ("train", "val")}
    out |= {("teacher", t): keys.teacher(cfg, t) for t in ("vae", "siglip", "resnet", "inception")}
    out |= {("encode", k): keys.encode(cfg, k) for k in ("latents", "siglip")}
    for v in cfg.tokenizer_variants:
        if cfg.stage1_source(v) == v:
            out[("stage1", v)] = keys.stage1(cfg, v)
            out[("recon", v, "diffusion")] = keys.recon(cfg, v, "diffusion")
        out[("stage2", v)] = keys.stage2(cfg, v)
        out[("recon", v, "refiner")] = keys.recon(cfg, v, "refiner")
    out[("recon", None, "vae")] = keys.recon(cfg, None, "vae")
    for g in cfg.generator_variants:
        out[("generator", g)] = keys.generator(cfg, g)
        tok = cfg.generator_variant(g).tokenizer
        out[("tokens", tok)] = keys.tokens(cfg, tok)
    for g, settings in spec.generator_settings(cfg).items():
        for s in settings:
            out[("sample", g, s)] = keys.sample(cfg, g, s)
    for need in spec.all_needs(cfg):
        if need.kind == "gen":
            out[("gen", need.variant, need.setting)] = keys.gen(cfg, need.variant, need.setting)
    return {job: keys.digest(key) for job, key in out.items()}


BASE = jobs(config())
SAMPLES = sorted(j for j in BASE if j[0] == "sample")
EVERY_EVAL = {j for j in BASE if j[0] in ("reference", "recon", "gen")}


def changed(*overrides: str) -> set[tuple]:
    """The jobs whose key the overrides change, and the jobs they add."""
    after = jobs(config(*overrides))
    return {job for job in after if after[job] != BASE.get(job)}


def gens(*names: str, settings=None) -> set[tuple]:
    """The sample and gen jobs of generators `names` (every setting, or those `settings` accepts)."""
    return {
        j
        for j in BASE
        if j[0] in ("sample", "gen") and j[1] in names and (settings is None or settings(j[2]))
    }


def tokenizer_chain(*names: str, stage1: bool = True) -> set[tuple]:
    """Everything downstream of tokenizer variants' Stage II (and their Stage I when `stage1`)."""
    out = {j for j in BASE if j[0] in ("stage2", "tokens") and j[1] in names}
    out |= {("recon", n, "refiner") for n in names}
    if stage1:
        out |= {j for j in BASE if j[0] == "stage1" and j[1] in names}
        out |= {j for j in BASE if j[0] == "recon" and j[1] in names and j[2] == "diffusion"}
    users = [g for g in GENERATORS if config().generator_variant(g).tokenizer in names]
    return out | {("generator", g) for g in users} | gens(*users)


EXPECTED = {
    # a sampling setting: every sample (and its metrics) that uses the main top-p, no training
    "generator.sample.top_p=0.8": {
        j for j in BASE if j[0] in ("sample", "gen") and not j[2].startswith("topp-")
    },
    # Stage II settings: every Stage II and downstream, never a Stage I
    "tokenizer.stage2.optim.lr=0.001": tokenizer_chain(*TOKENIZERS, stage1=False),
    # how jobs run, not what they compute: nothing
    "evaluation.batch_size=8": set(),
    "compute.num_workers=3": set(),
    "compute.threads=2": set(),
    "compute.trackers=[]": set(),
    "compute.compile=true": set(),
    "compute.forkserver=false": set(),
    "tokenizer.stage1.optim.log_every=7": set(),
    "generator.optim.keep_ckpts=3": set(),
    "data.encode_batch_size=5": set(),
    "tokenizer.dump_batch_size=9": set(),
    # data: the validation split alone
    "data.val_shards=2": {("index", "val")},
    # a teacher
    "pretrained.inception.lr=0.003": {("teacher", "inception")} | EVERY_EVAL,
    # one tokenizer variant's Stage I and everything downstream of it
    "tokenizer_variants.b32.bits=30": tokenizer_chain("b32"),
    # the flow sampler of the reconstruction metrics: the diffusion rows only
    "tokenizer.sampler.steps=12": {("recon", v, "diffusion") for v in OWN_STAGE1},
    # a replica's seed: that replica's whole chain (training, flow noise, samples), nothing else
    "tokenizer_variants.b18-seed1.seed_offset=2": tokenizer_chain("b18-seed1"),
    "generator_variants.ar-l-seed1.seed_offset=2": {("generator", "ar-l-seed1")} | gens("ar-l-seed1"),
    # one generator's training: its samples and their metrics
    "generator_variants.ar-xl.optim.lr=0.001": {("generator", "ar-xl")} | gens("ar-xl"),
    # a sweep point: the new point only; the others keep their keys
    "evaluation.sweeps.cfg_linear=[1.0, 3.0, 7.0]": {
        ("sample", "ar-l", "cfg-linear-7.0"),
        ("gen", "ar-l", "cfg-linear-7.0"),
    },
    # a metric setting: generation metrics only
    "evaluation.pr_k=5": {j for j in BASE if j[0] == "gen"},
    # the images of every reconstruction metric and the reference of every FID
    "evaluation.recon_images=100": EVERY_EVAL,
    # precision changes the arithmetic of every job that runs a model (not the reference features:
    # Inception and the classifier run in float32 whatever the precision)
    "compute.mixed_precision=bf16": set(BASE)
    - {("synthetic",), ("shard",), ("index", "train"), ("index", "val"), ("reference",)},
}


@pytest.mark.parametrize("override", list(EXPECTED))
def test_a_change_keys_exactly_the_jobs_whose_output_it_can_change(override):
    assert changed(override) == EXPECTED[override]


def test_sampling_points_share_a_key_exactly_when_they_sample_alike():
    """cfg-linear-3.0, steps-8 and topp-0.75 of the default are its main setting (same sampler settings,
    same seeds: the same images); every other pair differs."""
    from dataclasses import asdict

    from semtok.sampling.settings import sample_config

    cfg = config()
    for a in SAMPLES:
        for b in SAMPLES:
            same = asdict(sample_config(cfg, a[1], a[2])) == asdict(sample_config(cfg, b[1], b[2]))
            same = same and a[1] == b[1] and (a[2] == "progressive") == (b[2] == "progressive")
            assert (BASE[a] == BASE[b]) == same, (a, b)
    assert BASE[("sample", "ar-l", "main")] == BASE[("sample", "ar-l", "cfg-linear-3.0")]
    assert BASE[("stage1", "b18")] != BASE[("stage1", "b32")]


def test_hparams_are_the_flat_key():
    flat = keys.hparams(keys.stage2(config(), "b18"))
    assert flat["stage2/optim/lr"] == config().tokenizer.stage2.optim.lr
    assert flat["stage1/stage1/optim/steps"] == config().tokenizer.stage1.optim.steps
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
    assert "stage2/optim/log_every" not in flat
