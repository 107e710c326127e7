"""The benchmark commands run on a CPU in CI time and print every throughput and ratio."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_model_benchmarks_print_throughputs_and_ratios(tmp_path):
    out = tmp_path / "models.csv"
    done = run_benchmark("bench_models.py", "--scale", "tiny", "--steps", "1", "--csv", str(out))
    with open(out) as f:
        rows = {r["benchmark"]: r for r in csv.DictReader(f)}
    assert set(rows) == {
        "train_stage1",
        "train_stage2",
        "train_generator",
        "sample_tokens_to_pixels",
        "mmdit_block_ours_vs_diffusers",
        "bsq_entropy_factorised_vs_bruteforce_d16",
    }
    assert all(float(r["value"]) > 0 for r in rows.values())
    assert float(rows["train_stage1"]["tflop_per_step"]) > 0
    assert "mmdit_block_ours_vs_diffusers" in done.stdout


@pytest.mark.slow
def test_data_benchmark_prints_its_ratio(tmp_path):
    out = tmp_path / "data.csv"
    done = run_benchmark(
        "bench_data.py", "--images", "64", "--workers", "1", "--batch-size", "16", "--csv", str(out)
    )
    assert out.stat().st_size > 0 and "ImageFolder" in done.stdout
