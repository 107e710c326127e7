"""Where every artefact of the DAG lives, relative to `out_dir`. Rules and entry points both use
these functions, so a path is spelled once.

    data/synthetic/{train,val}/<wnid>/*.JPEG      synthetic ImageNet-layout folder (default config)
    data/index/{split}.tsv                         key, path, class, shard of every listed image
    data/shards/{split}/{split}-{i:05d}.tar        webdataset images (__key__, jpg, cls)
    data/manifests/{split}-{i:05d}.json            per-shard counts and rejected files with reasons
    data/latents/{split}/{split}-{i:05d}.tar       VAE latent mean (+ flip), fp16
    data/siglip/{split}/{split}-{i:05d}.tar        SigLIP patch features, fp16
    teachers/{name}/                               bootstrapped tiny teachers (default config)
    tokenizer/{variant}/stage1/                    Stage I weights (save_pretrained)
    tokenizer/{variant}/stage2/                    the final tokenizer (SemTok.from_pretrained)
    tokens/{variant}/train-{i:05d}.tar             dumped tokens
    generator/{variant}/                           trained generator
    samples/{variant}/{setting}.npz                uint8 N×H×W×3 (`arr_0`), labels, seeds
    metrics/recon/{variant}-{mode}.csv, metrics/gen/{variant}-{setting}.csv
    standins/reference-batch.npz                   stand-in ADM reference batch (paper-smoke runs)
    metrics/data/skipped-{split}.jsonl             corrupt shards/samples skipped by loaders (skip mode)
    tables/table{N}.{csv,md,tex}, figures/{name}.{png,pdf}
    checkpoints/{job}/                             resumable training state (not a declared output)
    benchmarks/{job}.tsv                           Snakemake's `benchmark:` record of a job (time, memory)
    logs/{job}.log                                 a job's log
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "val")


def shard_name(split: str, index: int | str) -> str:
    """`train-00012`; a str index (a Snakemake wildcard such as "{shard}") is used as it is."""
    return f"{split}-{index:05d}" if isinstance(index, int) else f"{split}-{index}"


def synthetic_root(out: Path) -> Path:
    return out / "data" / "synthetic"


def index_file(out: Path, split: str) -> Path:
    return out / "data" / "index" / f"{split}.tsv"


def image_shard(out: Path, split: str, index: int | str) -> Path:
    return out / "data" / "shards" / split / f"{shard_name(split, index)}.tar"


def shard_manifest(out: Path, split: str, index: int | str) -> Path:
    return out / "data" / "manifests" / f"{shard_name(split, index)}.json"


def data_manifest(out: Path) -> Path:
    return out / "data" / "manifest.json"


def skipped_record(out: Path, split: str) -> Path:
    """Corrupt shards and samples the loaders skipped (`data.on_corrupt_shard: skip`), one JSON line each."""
    return out / "metrics" / "data" / f"skipped-{split}.jsonl"


def feature_shard(out: Path, kind: str, split: str, index: int | str) -> Path:
    """kind: "latents" or "siglip"."""
    return out / "data" / kind / split / f"{shard_name(split, index)}.tar"


def teacher_dir(out: Path, name: str) -> Path:
    return out / "teachers" / name


def tokenizer_dir(out: Path, variant: str, stage: str) -> Path:
    return out / "tokenizer" / variant / stage


def token_shard(out: Path, variant: str, index: int | str) -> Path:
    return out / "tokens" / variant / f"{shard_name('train', index)}.tar"


def generator_dir(out: Path, variant: str) -> Path:
    return out / "generator" / variant


def sample_file(out: Path, variant: str, setting: str) -> Path:
    return out / "samples" / variant / f"{setting}.npz"


def recon_metrics(out: Path, variant: str, mode: str) -> Path:
    return out / "metrics" / "recon" / f"{variant}-{mode}.csv"


def recon_examples(out: Path, variant: str, mode: str) -> Path:
    return out / "metrics" / "recon" / f"{variant}-{mode}.examples.npz"


def recon_features(out: Path, variant: str) -> Path:
    return out / "metrics" / "recon" / f"{variant}-features.npz"


def fid_reference(out: Path) -> Path:
    return out / "metrics" / "reference" / "val-features.npz"


def reference_standin(out: Path) -> Path:
    """A stand-in for ADM's reference batch (`evaluation.fid_reference: standin`): random images in its
    layout, for offline runs at the paper's shapes."""
    return out / "standins" / "reference-batch.npz"


def gen_metrics(out: Path, variant: str, setting: str) -> Path:
    return out / "metrics" / "gen" / f"{variant}-{setting}.csv"


def config_file(out: Path, digest: str) -> Path:
    """The resolved config of one settings hash, written once by the workflow and read by its jobs."""
    return out / "config" / f"{digest}.json"


def latest_config(out: Path) -> Path:
    """The resolved config that the run's most recent Snakemake invocation wrote."""
    found = sorted((out / "config").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    if not found:
        raise FileNotFoundError(f"no resolved config under {out / 'config'}: is {out} a run's out_dir?")
    return found[-1]


def table_file(out: Path, name: str, ext: str) -> Path:
    return out / "tables" / f"{name}.{ext}"


def figure_file(out: Path, name: str, ext: str) -> Path:
    return out / "figures" / f"{name}.{ext}"


def checkpoint_dir(out: Path, job: str) -> Path:
    return out / "checkpoints" / job


def benchmark_file(out: Path, job: str) -> Path:
    """Snakemake's benchmark record of job `job` (its log's name: `stage1_b18`, `encode_latents_train-00000`):
    wall time, peak memory (max_rss, MB), CPU time, one row per run."""
    return out / "benchmarks" / f"{job}.tsv"


def log_dir(out: Path, job: str) -> Path:
    return out / "logs" / job
