"""The claims table: the paper's findings judged on constructed metric CSVs (every verdict, the noise
rule, sweeps, premises), its files, the plot, the replicas' validation and the paper config."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from statistics import NormalDist

import pandas as pd
import pytest
from conftest import REPO, images_seen

from semtok.cli.main import main as cli_main
from semtok.config import ConfigError, load
from semtok.report import claims
from semtok.report.findings import CLAIMS as FINDINGS
from semtok.report.spec import CLAIMS, Input, all_needs, claims_needs, replicas, target_hash

TOKENIZERS = ["b18", "b18-seed1"]  # the main variants and their seed replicas in config/config.yaml
GENERATORS = ["ar-l", "ar-l-seed1"]
SPREAD = math.sqrt(2)  # two seeds a and b have the standard deviation |a − b|/√2


def set_metric(results: Path, need: Input, metric: str, value: float, n: int | None = None) -> None:
    """Overwrite one number (and optionally its sample count) of a metric CSV."""
    path = need.path(results)
    frame = pd.read_csv(path)
    hit = frame.metric == metric
    assert hit.any(), (path, metric)
    frame.loc[hit, "value"] = value
    if n is not None:
        frame.loc[hit, "n_samples"] = n
    frame.to_csv(path, index=False)


def recon(variant: str, setting: str = "refiner") -> Input:
    return Input("recon", variant, setting)


def gen(variant: str, setting: str = "main") -> Input:
    return Input("gen", variant, setting)


@pytest.fixture
def world(cfg, fresh_results):
    """A results folder with known numbers: over the seeds, tokenizer PSNR 20.0 and 20.71 (sd 0.5),
    generator class_acc 0.90 and 0.928 on 2000 samples (sd 0.02) and gFID 3.0 and 3.14 (sd 0.1)."""
    for variant, psnr in zip(TOKENIZERS, (20.0, 20.0 + 0.5 * SPREAD), strict=True):
        set_metric(fresh_results, recon(variant), "PSNR", psnr)
    accs, fids = (0.90, 0.90 + 0.02 * SPREAD), (3.0, 3.0 + 0.1 * SPREAD)
    for variant, acc, fid in zip(GENERATORS, accs, fids, strict=True):
        set_metric(fresh_results, gen(variant), "class_acc", acc, n=2000)
        set_metric(fresh_results, gen(variant), "gFID", fid)
    for variant in ("b18", "grid2d"):
        set_metric(fresh_results, recon(variant), "bpp", 0.28125)
    return fresh_results


def judged(cfg, results: Path) -> dict[str, claims.Judged]:
    return {j.claim.name: j for j in claims.collect(cfg, results)[0]}


def test_every_verdict_follows_the_stated_rule(cfg, world):
    set_metric(world, recon("b32"), "PSNR", 22.0)  # +2.0 over b18, noise √2·0.5 = 0.71: 2.8σ
    set_metric(world, recon("no-sem"), "PSNR", 20.5)  # −0.5: −0.7σ
    set_metric(world, recon("raster"), "PSNR", 22.0)  # −2.0: −2.8σ
    got = judged(cfg, world)
    noise = math.sqrt(2) * 0.5
    assert got["b32-recon"].effect == pytest.approx(2.0) and got["b32-recon"].noise == pytest.approx(noise)
    assert got["b32-recon"].verdict == claims.HOLDS
    assert got["sem-recon"].effect == pytest.approx(-0.5) and got["sem-recon"].verdict == claims.WITHIN_NOISE
    assert (
        got["global-recon"].effect == pytest.approx(-2.0) and got["global-recon"].verdict == claims.REVERSES
    )
    assert got["b32-recon"].paper_effect == pytest.approx(23.05 - 22.19)
    # Table 12: the default's fine-tuning only sees Stage II's images, b18 Stage I's too: not judged,
    # its effect still shown
    b18, finetune = sum(images_seen(cfg, "b18")), sum(images_seen(cfg, "finetune-only"))
    pretraining = got["pretraining"]
    assert pretraining.verdict == claims.NOT_COMPARABLE and pretraining.effect is not None
    reason = f"unequal training budgets (b18 {b18:,}, finetune-only {finetune:,} images)"
    assert reason in pretraining.reason


def test_the_threshold_is_the_configured_multiple_of_the_noise(cfg, world):
    set_metric(world, recon("b32"), "PSNR", 21.0)  # +1.0 = 1.41σ
    assert judged(cfg, world)["b32-recon"].verdict == claims.WITHIN_NOISE
    loose = dataclasses.replace(cfg.report.claims, z=1.0)
    cfg = dataclasses.replace(cfg, report=dataclasses.replace(cfg.report, claims=loose))
    assert judged(cfg, world)["b32-recon"].verdict == claims.HOLDS


def test_class_acc_noise_is_the_seed_spread_or_at_least_the_binomial_error(cfg, world):
    set_metric(world, gen("ar-l-grid2d"), "class_acc", 0.80, n=2000)
    j = judged(cfg, world)["vs-2d-gen"]
    assert j.metric == "class_acc" and j.claim.paper_metric == "gFID"
    assert j.noise == pytest.approx(math.sqrt(2) * 0.02)  # seed sd 0.02 > binomial 0.0067
    assert j.effect == pytest.approx(0.10) and j.verdict == claims.HOLDS
    set_metric(world, gen("ar-l-grid2d"), "class_acc", 0.80, n=40)  # binomial 0.063 > seed sd
    j = judged(cfg, world)["vs-2d-gen"]
    assert j.noise == pytest.approx(math.sqrt(0.02**2 + 0.8 * 0.2 / 40))
    assert j.verdict == claims.WITHIN_NOISE


def test_samples_of_one_generator_share_its_training_noise(cfg, world):
    """Linear vs constant CFG: the best of each sweep (by class_acc, the default's generation metric),
    with class_acc's binomial errors alone as noise."""
    for scale, acc in ((1.0, 0.90), (3.0, 0.92), (5.0, 0.94)):
        set_metric(world, gen("ar-l", f"cfg-linear-{scale}"), "class_acc", acc, n=2000)
    for scale, acc in ((1.0, 0.90), (2.0, 0.95), (3.0, 0.93)):
        set_metric(world, gen("ar-l", f"cfg-constant-{scale}"), "class_acc", acc, n=2000)
    j = judged(cfg, world)["cfg-schedule"]
    assert j.runs == (gen("ar-l", "cfg-linear-5.0"), gen("ar-l", "cfg-constant-2.0"))
    assert j.effect == pytest.approx(-0.01)
    assert j.noise == pytest.approx(math.sqrt((0.94 * 0.06 + 0.95 * 0.05) / 2000))
    assert j.standardised == pytest.approx(-1.387, abs=1e-3) and j.verdict == claims.WITHIN_NOISE


def test_steps_saturate_weighs_the_gain_below_the_main_setting_against_the_gain_above(cfg, world):
    for steps, acc in ((2, 0.50), (8, 0.90), (16, 0.92)):
        set_metric(world, gen("ar-l", f"steps-{steps}"), "class_acc", acc, n=2000)
    j = judged(cfg, world)["steps-saturate"]
    assert j.runs == (gen("ar-l", "steps-2"), gen("ar-l", "steps-8"), gen("ar-l", "steps-16"))
    assert j.effect == pytest.approx((0.90 - 0.50) - (0.92 - 0.90))
    se = [math.sqrt(p * (1 - p) / 2000) for p in (0.50, 0.90, 0.92)]
    assert j.noise == pytest.approx(math.sqrt(se[0] ** 2 + 4 * se[1] ** 2 + se[2] ** 2))
    assert j.verdict == claims.HOLDS


def test_top_p_compares_the_main_setting_with_the_best_other_in_gfid(cfg, world):
    for p, fid in ((0.5, 2.5), (0.75, 2.0), (1.0, 2.2)):
        set_metric(world, gen("ar-l", f"topp-{p}"), "gFID", fid)
    j = judged(cfg, world)["top-p"]
    assert j.runs == (gen("ar-l", "topp-0.75"), gen("ar-l", "topp-1.0"))
    assert j.effect == pytest.approx(0.2)  # lower is better: 2.2 − 2.0
    assert j.noise == pytest.approx(math.sqrt(2) * 0.1)  # gFID: the generators' seed spread
    assert j.verdict == claims.WITHIN_NOISE


def test_unequal_bits_per_pixel_make_the_1d_vs_2d_comparison_not_comparable(cfg, world):
    assert judged(cfg, world)["1d-vs-2d-recon"].verdict != claims.NOT_COMPARABLE
    set_metric(world, recon("grid2d"), "bpp", 0.5)
    j = judged(cfg, world)["1d-vs-2d-recon"]
    assert (
        j.verdict == claims.NOT_COMPARABLE
        and "unequal bits per pixel (b18 0.2812, grid2d 0.5000)" in j.reason
    )


def test_a_sweep_without_the_setting_a_claim_reads_is_not_comparable(cfg, world):
    sweeps = dataclasses.replace(cfg.evaluation.sweeps, cfg_linear=[1.0, 5.0], top_p=[0.5, 1.0])
    cfg = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, sweeps=sweeps))
    got = judged(cfg, world)
    assert got["cfg-gfid"].verdict == claims.NOT_COMPARABLE
    assert got["cfg-gfid"].reason == "no gFID of the cfg_linear sweep's interior setting"
    assert got["top-p"].reason == "no gFID of the top_p sweep's main setting"  # 0.75 is not in the sweep
    assert got["cfg-is"].verdict != claims.NOT_COMPARABLE


def test_without_replicas_only_class_acc_has_a_noise_level(cfg, world):
    none = dataclasses.replace(cfg.report.claims, tokenizer_replicas=[], generator_replicas=[])
    cfg = dataclasses.replace(cfg, report=dataclasses.replace(cfg.report, claims=none))
    got = judged(cfg, world)
    assert got["b32-recon"].verdict == claims.NOT_COMPARABLE
    assert got["b32-recon"].reason == "no measured noise of PSNR"
    assert got["vs-2d-gen"].verdict != claims.NOT_COMPARABLE  # binomial error
    assert gen("ar-l-seed1") not in claims_needs(cfg)


def test_a_missing_metric_is_named(cfg, world):
    path = recon("no-sem").path(world)
    frame = pd.read_csv(path)
    frame[frame.metric != "feature_silhouette"].to_csv(path, index=False)
    j = judged(cfg, world)["sem-clusters"]
    assert j.verdict == claims.NOT_COMPARABLE and j.reason == "no feature_silhouette of no_semantics"


def test_each_finding_drawn_from_a_table_is_the_papers(cfg, world):
    """The paper's own numbers support every table claim as written (positive paper effect)."""
    for j in judged(cfg, world).values():
        if all(t.paper is not None for t in j.claim.terms):
            assert j.paper_effect is not None and j.paper_effect > 0, j.claim.name
        else:
            assert j.claim.paper, j.claim.name  # a figure's finding says what the figure shows


def test_the_table_files_state_the_rule_and_the_noise(cfg, world, tmp_path):
    outputs = {ext: tmp_path / f"claims.{ext}" for ext in ("csv", "md", "tex")}
    summary = claims.write(cfg, world, outputs)
    frame = pd.read_csv(outputs["csv"])
    assert len(frame) == len(FINDINGS) >= 20 and set(frame.verdict) <= set(claims.VERDICTS)
    assert summary["verdicts"] == claims.counts(list(judged(cfg, world).values()))
    md = outputs["md"].read_text()
    assert md.count("\n| ") == len(FINDINGS) + 1
    assert "holds if effect > 2·noise, reverses if effect < −2·noise" in md
    assert "tokenizers: 2 seeds (b18, b18-seed1; refiner reconstructions), standard deviation:" in md
    assert "PSNR 0.50" in md and "class_acc 0.020" in md
    assert "from 2 seeds the true one lies within 0.45–31.9× each estimate (95 %)" in md
    assert f"config hash {target_hash(cfg, CLAIMS)}" in md
    tex = outputs["tex"].read_text()
    assert r"\begin{tabular}" in tex and tex.count(r"\\") > len(FINDINGS)
    assert not {"σ", "±", "√", "Σ", "ᵢ", "²"} & set(tex)  # written as LaTeX math


def test_the_seed_spread_interval_is_the_chi_square_one():
    """σ's 95 % interval from n seeds, checked against closed forms of the χ² quantiles: with one degree
    of freedom χ² is a squared standard normal, with two an exponential of mean 2."""
    z = NormalDist().inv_cdf
    low, high = claims.sd_interval(2)
    assert low == pytest.approx(1 / z(0.9875), rel=1e-9)  # √(1/χ²₁(0.975)) = 1/Φ⁻¹(0.9875)
    assert high == pytest.approx(1 / z(0.5125), rel=1e-9)
    low, high = claims.sd_interval(3)
    assert low == pytest.approx(math.sqrt(2 / (-2 * math.log(0.025))), rel=1e-9)
    assert high == pytest.approx(math.sqrt(2 / (-2 * math.log(0.975))), rel=1e-9)
    widths = [claims.sd_interval(n)[1] / claims.sd_interval(n)[0] for n in (2, 3, 5, 20)]
    assert widths == sorted(widths, reverse=True) and widths[-1] < 2  # more seeds, a tighter interval
    with pytest.raises(ValueError, match="at least 2 seeds"):
        claims.sd_interval(1)


def test_the_plot_and_the_cli(cfg, world, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "config" / "config.yaml").read_text())
    table = ["table", "--config", str(config), "--name", "claims", "--results", str(world)]
    assert cli_main(
        [
            *table,
            "--csv",
            str(tmp_path / "c.csv"),
            "--md",
            str(tmp_path / "c.md"),
            "--tex",
            str(tmp_path / "c.tex"),
        ]
    ) in (0, None)
    figure = ["figure", "--config", str(config), "--name", "claims", "--results", str(world)]
    assert cli_main([*figure, "--png", str(tmp_path / "c.png"), "--pdf", str(tmp_path / "c.pdf")]) in (
        0,
        None,
    )
    assert (tmp_path / "c.png").stat().st_size > 10_000 and (tmp_path / "c.pdf").stat().st_size > 1_000
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(FINDINGS)


# ---------------------------------------------------------------------------------------------
# What the claims read, and the replicas


def test_the_claims_read_the_replicas_and_are_part_of_the_report(cfg):
    needs = claims_needs(cfg)
    assert {recon(v) for v in TOKENIZERS} | {gen(v) for v in GENERATORS} <= set(needs)
    assert set(needs) <= set(all_needs(cfg))
    assert replicas(cfg) == {"tokenizers": TOKENIZERS, "generators": GENERATORS}


def test_the_claims_hash_follows_their_settings_only(cfg):
    other = dataclasses.replace(cfg.report.claims, z=3.0)
    changed = dataclasses.replace(cfg, report=dataclasses.replace(cfg.report, claims=other))
    assert target_hash(changed, CLAIMS) != target_hash(cfg, CLAIMS)
    assert target_hash(changed, "table4") == target_hash(cfg, "table4")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"tokenizer_variants.b18-seed1": {"seed_offset": 1, "bits": 32}},
            r"'b18-seed1' differs from 'b18' in \['bits'\]",
        ),
        ({"tokenizer_variants.b18-seed1": {"seed_offset": 0}}, "repeats seed_offset 0"),
        ({"report.claims.tokenizer_replicas": ["b18-seed1", "nope"]}, "'nope' is not in tokenizer_variants"),
        (
            {"generator_variants.ar-l-seed1": {"tokenizer": "no-sem", "seed_offset": 1}},
            "must model the tokenizer 'b18'",
        ),
        (
            {
                "generator_variants.ar-l-seed1": {
                    "tokenizer": "b18-seed1",
                    "seed_offset": 1,
                    "arch": {"size": "XL"},
                }
            },
            r"differs from 'ar-l' in \['arch'\]",
        ),
    ],
)
def test_a_replica_that_is_not_one_is_refused_naming_the_key(change, message):
    ((key, value),) = change.items()
    overrides = [f"{key}={value}".replace("'", "")]
    cfg = load(REPO / "config" / "config.yaml", overrides)
    with pytest.raises(ConfigError, match=f"report.claims.(tokenizer|generator)_replicas: .*{message}"):
        claims_needs(cfg)


def test_the_paper_config_plans_the_claims(tmp_path):
    cfg = load(REPO / "config" / "paper.yaml", ["data.imagenet_root=/x", f"out_dir={tmp_path}"])
    needs = claims_needs(cfg)
    assert gen("ar-l", "topp-0.75") in needs and gen("ar-l", "steps-64") in needs
    assert recon("b18", "diffusion") in needs
