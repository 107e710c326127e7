"""A synthetic results folder holding every file the report reads, in the formats the pipeline writes
(semtok/eval/records.py: the tidy metric CSVs; semtok/paths.py: where each file lives)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semtok import paths
from semtok.config import Config, load
from semtok.data.imagenet import IndexRow, write_index
from semtok.eval.records import ORIGINAL, PSNR_DEFINITION, SSIM_DEFINITION, parse_protocol, protocol
from semtok.report.spec import Input, all_needs
from semtok.report.tables import CSV_COLUMNS
from semtok.sampling.settings import PROGRESSIVE, parse_setting

REPO = Path(__file__).resolve().parents[2]
RECON_METRICS = {
    "rFID": 1.0,
    "PSNR": 21.0,
    "SSIM": 0.6,
    "LPIPS": 0.13,
    "class_acc": 0.5,
    "bpp": 0.07,
    "codebook_usage": 0.9,
    "feature_silhouette": 0.2,
}
GEN_METRICS = {"gFID": 3.0, "IS": 250.0, "IS_std": 5.0, "Precision": 0.8, "Recall": 0.55, "class_acc": 0.4}
SIZE, CLASSES = 8, 4


def protocols(extractor: str, reference: str, data: str, net: str, classifier: str, n: int) -> dict[str, str]:
    """The protocol strings semtok.eval writes, for one extractor, reference, data set and n."""
    is_protocol = protocol(fid=extractor, splits=10, n=n)
    pr = protocol(fid=extractor, ref=reference, k=3, n=n)
    return {
        "rFID": protocol(fid=extractor, ref=f"val-images({n})", data=data, n=n),
        "PSNR": protocol(definition=PSNR_DEFINITION, data=data, n=n),
        "SSIM": protocol(definition=SSIM_DEFINITION, data=data, n=n),
        "LPIPS": protocol(net=net, data=data, n=n),
        "class_acc": protocol(classifier=classifier, labels="true", classes=10, data=data, n=n),
        "bpp": protocol(definition="bits*tokens/(H*W)"),
        "codebook_usage": protocol(definition="distinct-indices/min(tokens,2^d)", n=n),
        "feature_silhouette": protocol(definition="sklearn-silhouette-euclidean-by-class", n=n),
        "gFID": protocol(fid=extractor, ref=reference, n=n),
        "IS": is_protocol,
        "IS_std": is_protocol,
        "Precision": pr,
        "Recall": pr,
        "params": protocol(definition="safetensors-element-count"),
    }


STAND_IN = protocols(
    "classifier:1a2b3c4d",
    "val-images(40)",
    "synthetic-val-32px",
    "lpips-alex-randombackbone",
    "classifier:1a2b3c4d",
    40,
)
PAPER = protocols(
    "inception-v3-compat:6726825d",
    "VIRTUAL_imagenet256_labeled.npz",
    "imagenet-val-256px",
    "lpips-alex",
    "resnet50-IMAGENET1K_V2",
    50000,
)


def metrics_frame(
    need: Input, metrics: dict[str, float], protocols: dict[str, str] = STAND_IN
) -> pd.DataFrame:
    n = int(parse_protocol(protocols["rFID"])["n"])
    rows = [
        {
            "run_id": "test",
            "kind": need.kind,
            "variant": need.variant,
            "setting": need.setting,
            "metric": name,
            "value": value,
            "protocol": protocols[name],
            "config_hash": "0123456789ab",
            "n_samples": n,
            "created": "2026-01-01T00:00:00",
        }
        for name, value in metrics.items()
    ]
    return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


def _gen_metrics(need: Input, rng: np.random.Generator) -> dict[str, float]:
    _, x = parse_setting(need.setting)
    shift = 0.0 if x is None else (float(x) - 2.0) ** 2 / 10  # a U-shaped sweep
    out = {k: v * (1 + 0.1 * rng.standard_normal()) + shift for k, v in GEN_METRICS.items()}
    if need.setting == "main":
        out["params"] = float(rng.integers(10**5, 10**6))
    return out


# How a tokenizer's codes were decoded, as semtok.eval.recon.decoding_fields records it (the paper's steps)
DECODING = {"refiner": "steps=1", "diffusion": "steps=25 shift=1.0"}
IMAGE_METRICS = ("rFID", "PSNR", "SSIM", "LPIPS", "class_acc")


def decoded(protocols: dict[str, str], setting: str) -> dict[str, str]:
    """`protocols` with the decoding fields of recon setting `setting` on every image metric."""
    how = DECODING.get(setting)
    return {k: f"{v} {how}" if how and k in IMAGE_METRICS else v for k, v in protocols.items()}


def write_input(need: Input, out: Path, rng: np.random.Generator, protocols: dict[str, str]) -> None:
    path = need.path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (CLASSES * 3, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(CLASSES), 3)
    if need.kind == "recon":
        names = ["class_acc"] if (need.variant, need.setting) == ORIGINAL else RECON_METRICS
        metrics = {k: RECON_METRICS[k] * (1 + 0.1 * rng.standard_normal()) for k in names}
        metrics_frame(need, metrics, decoded(protocols, need.setting)).to_csv(path, index=False)
    elif need.kind == "gen":
        metrics_frame(need, _gen_metrics(need, rng), protocols).to_csv(path, index=False)
    elif need.kind == "examples":
        original = np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
        np.savez(path, original=original, recon=images[:6])
    elif need.kind == "features":
        feats = labels[:, None] * 3.0 + rng.standard_normal((len(labels), 16))
        np.savez(path, features=feats.astype(np.float32), labels=labels.astype(np.int64))
    elif need.setting == PROGRESSIVE:
        partial = rng.integers(0, 256, (4, 3, SIZE, SIZE, 3), dtype=np.uint8)
        np.savez(
            path, partial=partial, steps=np.array([1, 3, 5, 7]), fraction=np.array([0.25, 0.5, 0.75, 1.0])
        )
    else:
        np.savez(path, arr_0=images, labels=labels.astype(np.int64), seeds=np.arange(len(labels)))


def write_results(cfg: Config, out: Path, protocols: dict[str, str] = STAND_IN) -> Path:
    """Every metric and sample file the report reads, and a train index of the config's classes."""
    rng = np.random.default_rng(0)
    for need in all_needs(cfg):
        write_input(need, out, rng, protocols)
    classes = range(cfg.data.synthetic.num_classes)
    rows = [IndexRow(f"k{c}", f"/data/{c}.JPEG", c, f"n{c:08d}", shard=0) for c in classes]
    write_index(rows, paths.index_file(out, "train"))
    return out


def images_seen(cfg: Config, variant: str) -> tuple[int, int]:
    """(Stage I, Stage II) images tokenizer `variant` trains on, worked out here from the config's steps
    and batches (the oracle of Table 12's budgets, independent of semtok.report.spec)."""
    t = cfg.tokenizer_variant(variant)
    stage1 = 0 if cfg.stage1_source(variant) is None else t.stage1.optim.steps * t.stage1.optim.batch_size
    return stage1, t.stage2.optim.steps * t.stage2.optim.batch_size


@pytest.fixture(scope="session")
def cfg() -> Config:
    return load(REPO / "config" / "config.yaml")


@pytest.fixture(scope="session")
def results(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete synthetic results folder measured under stand-in protocols, as the default run's
    (shared, read-only for tests)."""
    return write_results(cfg, tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="session")
def paper_results(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, every number measured under the paper's protocol (shared, read-only)."""
    return write_results(cfg, tmp_path_factory.mktemp("paper_results"), PAPER)


@pytest.fixture
def fresh_results(cfg: Config, tmp_path: Path) -> Path:
    """A complete synthetic results folder a test may change."""
    return write_results(cfg, tmp_path / "results")
