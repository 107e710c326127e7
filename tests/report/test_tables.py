import dataclasses
import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, images_seen

from semtok.cli.main import main as cli_main
from semtok.report import tables
from semtok.report.reported import TABLES
from semtok.report.spec import Input, MissingInput, table_needs, target_hash


def _write(name, cfg, results, tmp_path):
    outputs = {ext: tmp_path / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    tables.write_table(TABLES[name], cfg, results, outputs)
    return pd.read_csv(outputs["csv"]), outputs["md"].read_text(), outputs["tex"].read_text()


@pytest.mark.parametrize("name", list(TABLES))
def test_table_has_ours_paper_and_diff(name, cfg, paper_results, tmp_path):
    frame, md, tex = _write(name, cfg, paper_results, tmp_path)
    table = TABLES[name]
    assert {"row", "run", "metric", "ours", "paper", "diff", "protocol", "config_hash"} <= set(frame.columns)
    assert len(frame) == len(table.rows) * len(table.columns)
    ours = frame[frame.run != tables.REPORTED_ONLY]
    assert len(ours) == sum(row.ours for row in table.rows) * len(table.columns)
    measured = ours[(ours.metric != "params") & ours.paper.notna()]
    assert measured[["ours", "paper", "diff"]].notna().all().all() and measured.comparable.all()
    np.testing.assert_allclose(measured["diff"], measured["ours"] - measured["paper"])
    assert f"| {tables.NOT_COMPARABLE} |" not in md
    reported = frame[frame.run == tables.REPORTED_ONLY]
    assert reported["ours"].isna().all() and reported["diff"].isna().all()
    assert reported["paper"].notna().any() or reported.empty
    for text in (md, tex):
        assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert "ours" in md and "paper" in md and "Δ" in md and "Protocols:" in md and "config hash" in md
    assert r"\begin{tabular}" in tex and r"$\Delta$" in tex and tex.count("&") > 0


def test_cells_hold_the_csv_values(cfg, paper_results, tmp_path):
    frame, md, _ = _write("table4", cfg, paper_results, tmp_path)
    csv = pd.read_csv(paper_results / "metrics/gen/ar-l-no-distill-main.csv")
    gfid = csv.set_index("metric").value["gFID"]
    cell = frame[(frame.row == "contrastive only") & (frame.metric == "gFID")].iloc[0]
    assert cell.ours == pytest.approx(gfid) and cell.paper == 2.87
    assert cell["diff"] == pytest.approx(gfid - 2.87)
    assert cell.run == "no-distill-refiner + ar-l-no-distill-main"
    assert f"| {gfid:.2f} | 2.87 | {gfid - 2.87:+.2f} |" in md
    assert "fid=inception-v3-compat:6726825d" in cell.protocol


@pytest.mark.parametrize("name", list(TABLES))
def test_stand_in_numbers_show_no_difference(name, cfg, results, tmp_path):
    """The default run measures with a stand-in classifier on 40 synthetic images: no Δ anywhere."""
    frame, md, tex = _write(name, cfg, results, tmp_path)
    pairs = frame[frame.ours.notna() & frame.paper.notna()]
    stand_in = pairs[~pairs.metric.isin(["bpp", "params"])]
    assert len(stand_in) and stand_in["diff"].isna().all() and not stand_in.comparable.any()
    assert f"| {tables.NOT_COMPARABLE} |" in md and tables.NOT_COMPARABLE in tex
    if {"rFID", "gFID"} & set(stand_in.metric):
        assert "feature extractor classifier (paper: inception-v3-compat)" in md
    if "gFID" in set(stand_in.metric):
        assert "reference val-images(40) (paper: VIRTUAL_imagenet256_labeled.npz)" in md
    bpp = pairs[pairs.metric == "bpp"]
    np.testing.assert_allclose(bpp["diff"], bpp["ours"] - bpp["paper"])  # a property of the config


def test_one_field_off_the_paper_protocol_is_named(cfg, paper_results, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(paper_results, results)
    path = results / "metrics/gen/ar-l-main.csv"
    csv = pd.read_csv(path)
    csv["protocol"] = csv.protocol.str.replace("n=50000", "n=10000")
    csv.to_csv(path, index=False)
    frame, md, _ = _write("table2", cfg, results, tmp_path)
    ours = frame[frame.run == "ar-l-main"].set_index("metric")
    assert ours.loc[["gFID", "IS", "Precision", "Recall"], "diff"].isna().all()
    assert ours.loc["params", "diff"] == pytest.approx(ours.loc["params", "ours"] - 318e6)
    assert "n/c gFID [ar-l-main]: samples 10000 (paper: 50000)." in md
    assert frame[frame.run == "ar-xl-main"].comparable.dropna().all()


def test_flow_rows_decoded_with_other_steps_than_the_papers_25_are_not_compared(cfg, paper_results, tmp_path):
    """Table 6's diffusion rows are the paper's only under its 25 Euler steps (§A.1); the refiner's are
    one step. A flow CSV of 10 steps, every other field the paper's, gets n/c naming the steps."""
    results = tmp_path / "results"
    shutil.copytree(paper_results, results)
    path = results / "metrics/recon/b18-diffusion.csv"
    csv = pd.read_csv(path)
    assert csv.protocol[csv.metric == "PSNR"].str.contains(" steps=25 ").all()
    csv["protocol"] = csv.protocol.str.replace(" steps=25 ", " steps=10 ")
    csv.to_csv(path, index=False)
    frame, md, _ = _write("table6", cfg, results, tmp_path)
    flow = frame[frame.run == "b18-diffusion"].set_index("metric")
    assert flow["diff"].isna().all() and not flow.comparable.any()
    assert "n/c PSNR [b18-diffusion]: decoder steps 10 (paper: 25)." in md
    assert frame[frame.run != "b18-diffusion"].comparable.all()


def test_a_refiner_row_decoded_in_more_than_one_step_is_not_compared(cfg, paper_results, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(paper_results, results)
    path = results / "metrics/recon/b32-refiner.csv"
    csv = pd.read_csv(path)
    csv["protocol"] = csv.protocol.str.replace(" steps=1", "")
    csv.to_csv(path, index=False)
    frame, md, _ = _write("table1", cfg, results, tmp_path)
    assert not frame[(frame.run == "b32-refiner") & (frame.metric == "rFID")].comparable.any()
    assert "n/c rFID [b32-refiner]: decoder steps not recorded (paper: 1)." in md


def test_table12_states_each_rows_training_budget_and_marks_unequal_ones(cfg, results, tmp_path):
    """The default's fine-tuning-only tokenizer sees Stage II's images only, b18 Stage I's as well: the
    table says so and that its rows are not comparable at equal budget."""
    _, md, tex = _write("table12", cfg, results, tmp_path)
    (f1, f2), (b1, b2) = images_seen(cfg, "finetune-only"), images_seen(cfg, "b18")
    assert f1 == 0 and b1 > 0
    assert f"- finetune-only: Stage I 0 + Stage II {f2:,} = {f2:,} images" in md
    assert f"- b18: Stage I {b1:,} + Stage II {b2:,} = {b1 + b2:,} images" in md
    assert f"Unequal training budgets ({f2:,} to {b1 + b2:,} images)" in md
    assert f"{(b1 + b2) / f2:.1f}× as much training" in md
    assert "Unequal training budgets" in tex


def test_table12_at_equal_budget_says_so(cfg, results, tmp_path):
    budget = sum(images_seen(cfg, "b18"))
    batch = cfg.tokenizer_variant("finetune-only").stage2.optim.batch_size
    assert budget % batch == 0
    variants = {**cfg.tokenizer_variants}
    variants["finetune-only"] = {**variants["finetune-only"], "stage2": {"optim": {"steps": budget // batch}}}
    equal = dataclasses.replace(cfg, tokenizer_variants=variants)
    _, md, _ = _write("table12", equal, results, tmp_path)
    assert f"- finetune-only: Stage I 0 + Stage II {budget:,} = {budget:,} images" in md
    assert f"Every row saw the same training budget ({budget:,} images)." in md and "Unequal" not in md
    assert target_hash(equal, "table12") != target_hash(cfg, "table12")
    assert target_hash(equal, "table11") == target_hash(cfg, "table11")


def test_table1_shows_the_frozen_vae_beside_sd_vae(cfg, paper_results, tmp_path):
    frame, md, _ = _write("table1", cfg, paper_results, tmp_path)
    vae = frame[frame.run == "vae-frozen"].set_index("metric")
    csv = pd.read_csv(paper_results / "metrics/recon/vae-frozen.csv").set_index("metric").value
    assert vae.ours.to_dict() == pytest.approx({m: csv[m] for m in ("bpp", "rFID", "PSNR", "SSIM", "LPIPS")})
    assert vae.paper.isna().all() and vae["diff"].isna().all()
    labels = list(frame.drop_duplicates("row").row)
    assert labels.index("SD3.5-VAE (frozen; our ceiling)") == labels.index("SD-VAE*") + 1
    assert "vae-frozen: the frozen VAE alone" in md


def test_reported_only_rows_are_marked(cfg, results, tmp_path):
    frame, md, _ = _write("table2", cfg, results, tmp_path)
    biggan = frame[frame.row == "BigGAN"]
    assert (biggan.run == tables.REPORTED_ONLY).all()
    assert biggan.set_index("metric").paper.to_dict() == {
        "params": 112e6,
        "gFID": 6.95,
        "IS": 224.5,
        "Precision": 0.89,
        "Recall": 0.38,
    }
    assert "| BigGAN | GAN | reported only | – | 112M | – |" in md


def test_params_show_na_when_the_csv_has_none(cfg, fresh_results, tmp_path):
    path = fresh_results / "metrics/gen/ar-xl-main.csv"
    csv = pd.read_csv(path)
    csv[csv.metric != "params"].to_csv(path, index=False)
    frame, md, _ = _write("table2", cfg, fresh_results, tmp_path)
    row = frame[(frame.run == "ar-xl-main") & (frame.metric == "params")].iloc[0]
    assert math.isnan(row.ours) and row.paper == 746e6
    assert "| SemTok-AR-XL (Ours) | AR | ar-xl-main | n/a | 746M | – |" in md


def test_bits_per_pixel_falls_back_to_the_config(cfg, fresh_results, tmp_path):
    path = fresh_results / "metrics/recon/b32-refiner.csv"
    csv = pd.read_csv(path)
    csv[csv.metric != "bpp"].to_csv(path, index=False)
    frame, _, _ = _write("table1", cfg, fresh_results, tmp_path)
    tok = cfg.tokenizer_variant("b32")
    bpp = frame[(frame.run == "b32-refiner") & (frame.metric == "bpp")].iloc[0]
    assert bpp.ours == pytest.approx(32 * tok.num_tokens / cfg.data.resolution**2)
    assert bpp.paper == 0.125 and "from the config" in bpp.protocol


def test_missing_csv_names_it_and_its_rule(cfg, fresh_results, tmp_path):
    path = Input("gen", "ar-l-no-contra", "main").path(fresh_results)
    path.unlink()
    with pytest.raises(MissingInput, match=r"(?s)table4: missing.*ar-l-no-contra-main\.csv.*rule eval_gen"):
        _write("table4", cfg, fresh_results, tmp_path)
    assert not (tmp_path / "table4.md").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(value=np.where(f.metric == "PSNR", np.nan, f.value)), "'PSNR' is nan"),
        (lambda f: f[f.metric != "SSIM"], "no metric 'SSIM'"),
        (lambda f: f.assign(variant="b32"), r"holds run \(recon, b32, refiner\)"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "more than once"),
        (lambda f: f.drop(columns="protocol"), "columns"),
    ],
)
def test_bad_csv_is_rejected(change, message, cfg, fresh_results, tmp_path):
    path = fresh_results / "metrics/recon/lfq-refiner.csv"
    change(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(tables.TableError, match=message):
        _write("table10", cfg, fresh_results, tmp_path)


def test_every_paper_number_is_kept():
    # Spot checks against the paper's text: first, our and last rows of several tables.
    t1 = TABLES["table1"].rows
    assert t1[0].reported == {"bpp": 0.055, "rFID": 4.98, "PSNR": None, "SSIM": None, "LPIPS": None}
    assert t1[-1].recon == ("semtok_b32", "refiner") and t1[-1].reported["rFID"] == 0.67
    assert len(t1) == 17 and sum(r.ours for r in t1) == 3  # 15 reported, our VAE ceiling, b18, b32
    assert len(TABLES["table2"].rows) == 28 and TABLES["table2"].rows[-1].reported["IS"] == 310.5
    t3 = {r.label: r.gen[0] for r in TABLES["table3"].rows}
    assert t3 == {"VQGAN": "grid2d", "FlowMo-Lo": "no_semantics", "SemTok (Ours)": "ar_l"}  # roles
    t4 = [(r.recon[0], r.gen[0], r.reported["rFID"], r.reported["IS"]) for r in TABLES["table4"].rows]
    assert t4 == [
        ("no_semantics", "no_semantics", 1.08, 271.4),
        ("no_distillation", "no_distillation", 0.97, 276.8),
        ("no_contrastive", "no_contrastive", 1.02, 264.9),
        ("semtok", "ar_l", 0.88, 293.1),
    ]
    assert TABLES["table12"].rows[0].recon == ("finetune_only", "refiner")
    assert TABLES["table14"].rows[0].gen == ("ar_l", "order-confidence")
    for table in TABLES.values():
        for row in table.rows:
            assert set(row.reported) == {c.metric for c in table.columns}
            assert len(row.info) == len(table.info)


def test_needs_are_unique_and_in_row_order(cfg):
    needs = table_needs(cfg, "table5")
    assert [(n.kind, n.variant) for n in needs] == [
        ("recon", "raster"),
        ("gen", "ar-l-raster"),
        ("recon", "b18"),
        ("gen", "ar-l"),
    ]


def test_tex_escapes_specials():
    assert tables.tex("2^18 & 5% run_id ✓") == r"2$^{18}$ \& 5\% run\_id \checkmark{}"
    assert tables.tex("a^b") == r"a\textasciicircum{}b"


def test_comparison_tolerates_missing_runs(paper_results):
    metrics = tables.load_metrics(paper_results, "recon")
    metrics = metrics[metrics.variant != "lfq"]
    got = tables.comparison(metrics, ["table10"])
    assert got[got.run == "lfq-refiner"].ours.isna().all()
    assert got[got.run == "b18-refiner"][["ours", "diff"]].notna().all().all()


def test_comparison_leaves_out_the_difference_of_stand_in_numbers(results):
    got = tables.comparison(tables.load_metrics(results, "recon"), ["table10"])
    assert got.ours.notna().all() and got["diff"].isna().all() and not got.comparable.any()


def test_cli(cfg, results, tmp_path):
    md = tmp_path / "t.md"
    argv = [
        "table",
        "--config",
        str(REPO / "config/config.yaml"),
        "--name",
        "table13",
        "--results",
        str(results),
    ]
    argv += ["--csv", str(tmp_path / "t.csv"), "--md", str(md), "--tex", str(tmp_path / "t.tex")]
    assert cli_main(argv) == 0
    assert "18 (Bitwise)" in md.read_text() and (tmp_path / "t.tex").exists()
