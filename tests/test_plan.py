"""`semtok plan`: the bill of all_tables. The FLOPs it scales from reduced depths equal those counted on
the full-depth models; the steps and samples are the config's; the GPU-hours follow from FLOPs, MFU and
peak; the command prints the table for the paper config without downloading anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from semtok import plan
from semtok.cli.main import main as cli_main
from semtok.config import from_dict

ROOT = Path(__file__).resolve().parents[1]


def tiny(*overrides: str):
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    return plan.architecture_config(from_dict(raw, list(overrides)))


def test_scaled_recovers_a_stack_of_identical_blocks():
    assert plan.scaled(lambda depth: 7.0 + 5.0 * depth, 24) == 7.0 + 5.0 * 24
    assert plan.scaled(lambda depth: 7.0 + 5.0 * depth, 1) == 12.0


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_tokenizer_flops_from_reduced_depths_equal_the_full_stack(stage, monkeypatch):
    """4 encoder and 3 decoder blocks (one dual-attention): the bill's estimate from depth-1/2 models
    equals torch's flop counter on the model at its full depths."""
    cfg = tiny(
        "tokenizer.encoder.depth=4",
        "tokenizer.decoder.transformer={num_layers: 3, dual_attention_layers: [1]}",
    )
    measure = {"stage1": plan.stage1_flops, "stage2": plan.stage2_flops}[stage]
    estimate = measure(cfg, "b18")
    # the same measurement on the configured depths, no scaling
    monkeypatch.setattr(plan, "_tokenizer_stack", lambda c, variant, count: count(c))
    full = measure(cfg, "b18")
    shallow = measure(plan._with_depths(cfg, "b18", 1, 1, []), "b18")
    assert shallow < full and estimate == pytest.approx(full, rel=1e-9)


def test_generator_flops_from_reduced_depths_equal_the_full_stack():
    cfg = tiny()
    g = cfg.generator_variant("ar-l")
    depth = g.sizes[g.arch.size][0]
    model = plan._generator(cfg, "ar-l", depth).train()
    from semtok.train.generator import generator_step

    direct = plan._train(generator_step(g), plan._Loop({"model": model}), plan._tokens(model))
    assert depth > 1 and plan.generator_flops(cfg, "ar-l") == pytest.approx(direct, rel=1e-9)


def test_the_paper_bill_prints_every_stage_and_its_total(capsys):
    """The paper config without its data or weights (architectures only, meta tensors): every stage's
    row, the total's FLOPs the sum of the rows', and the GPU-hours of those FLOPs at the given MFU and
    peak."""
    args = ["plan", "--configfile", "config/paper.yaml", "--set", "data.imagenet_root=/nonexistent"]
    assert cli_main([*args, "--mfu", "0.5", "--peak-tflops", "1000"]) == 0
    text = capsys.readouterr().out
    cells = [
        [c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")
    ]
    rows = {row[0]: row[1:] for row in cells}
    for stage in ("Stage I", "Stage II", "token dumps", "AR training", "sampling", "reconstruction metrics"):
        assert stage in rows, text
    # Stage I: the paper's 200k steps; 10 jobs = 8 variants + 2 seed replicas of b18
    assert rows["Stage I"][:2] == ["10", "200,000 steps"], rows["Stage I"]
    total = rows["**all_tables**"]
    flops = float(total[3].strip("*"))
    assert flops == pytest.approx(
        sum(float(r[3]) for k, r in rows.items() if k not in ("stage", "**all_tables**")), rel=1e-2
    )
    hours = float(total[4].strip("*").replace(",", ""))
    assert hours == pytest.approx(flops / (1000e12 * 0.5) / 3600, rel=1e-2)


def test_a_job_that_outlasts_its_profile_runtime_is_named_with_its_attempts():
    stages = [
        plan.Stage("AR training", "train_ar", 1, 100.0, "step", 1e15, 32),  # 1e17 FLOPs on 32 GPUs
        plan.Stage("Stage I", "stage1", 1, 1.0, "step", 1e15, 32),
    ]
    hours = stages[0].gpu_hours(1000, 0.5) / 32
    text = plan.render(stages, 1000, 0.5, "t", {"train_ar": hours / 2.5, "stage1": 48})
    assert f"**train_ar**: {hours:,.1f} h a job" in text and "(3 attempts;" in text
    assert "**stage1**" not in text
    assert "**train_ar**" not in plan.render(stages, 1000, 0.5, "t", {"train_ar": hours * 2})
