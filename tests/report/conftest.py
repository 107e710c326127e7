"""A synthetic results folder holding every file the report reads, in the formats of notes/contracts.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semtok.config import Config, load
from semtok.report.settings import PROGRESSIVE, Input, all_needs, parse_setting
from semtok.report.tables import CSV_COLUMNS

REPO = Path(__file__).resolve().parents[2]
RECON_METRICS = {"rFID": 1.0, "PSNR": 21.0, "SSIM": 0.6, "LPIPS": 0.13, "bpp": 0.07, "codebook_usage": 0.9}
GEN_METRICS = {"gFID": 3.0, "IS": 250.0, "IS_std": 5.0, "Precision": 0.8, "Recall": 0.55}
PROTOCOLS = {
    "rFID": "fid=classifier:1a2b3c4d ref=val-images(40) n=40",
    "gFID": "fid=classifier:1a2b3c4d ref=val-images(40) n=40",
    "LPIPS": "lpips-alex-randombackbone",
    "PSNR": "uint8-rgb-per-image-mean",
    "SSIM": "uint8-rgb-per-image-mean",
}
SIZE, CLASSES = 8, 4


def metrics_frame(need: Input, metrics: dict[str, float]) -> pd.DataFrame:
    rows = [
        {
            "run_id": "test",
            "kind": need.kind,
            "variant": need.variant,
            "setting": need.setting,
            "metric": name,
            "value": value,
            "protocol": PROTOCOLS.get(name, "test"),
            "config_hash": "0123456789ab",
            "n_samples": 40,
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


def write_input(need: Input, out: Path, rng: np.random.Generator) -> None:
    path = need.path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (CLASSES * 3, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(CLASSES), 3)
    if need.kind == "recon":
        metrics = {k: v * (1 + 0.1 * rng.standard_normal()) for k, v in RECON_METRICS.items()}
        metrics_frame(need, metrics).to_csv(path, index=False)
    elif need.kind == "gen":
        metrics_frame(need, _gen_metrics(need, rng)).to_csv(path, index=False)
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


def write_results(cfg: Config, out: Path) -> Path:
    rng = np.random.default_rng(0)
    for need in all_needs(cfg):
        write_input(need, out, rng)
    return out


@pytest.fixture(scope="session")
def cfg() -> Config:
    return load(REPO / "config" / "config.yaml")


@pytest.fixture(scope="session")
def results(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete synthetic results folder (shared, read-only for tests)."""
    return write_results(cfg, tmp_path_factory.mktemp("results"))


@pytest.fixture
def fresh_results(cfg: Config, tmp_path: Path) -> Path:
    """A complete synthetic results folder a test may change."""
    return write_results(cfg, tmp_path / "results")
