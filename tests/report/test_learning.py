import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

from semtok import config, paths
from semtok.cli.main import main as cli_main
from semtok.eval.records import ORIGINAL, VAE
from semtok.report import learning
from semtok.report.spec import LEARNING, Input, MissingInput, learning_needs, table_inputs
from semtok.report.tables import TableError


def _write(cfg, results, tmp_path):
    outputs = {ext: tmp_path / f"learning.{ext}" for ext in ("csv", "md", "tex")}
    learning.write(cfg, results, outputs)
    return pd.read_csv(outputs["csv"]), outputs["md"].read_text(), outputs["tex"].read_text()


def _value(results, need, metric):
    frame = pd.read_csv(need.path(results)).set_index("metric")
    return frame.value[metric]


def test_needs_cover_every_model_and_the_references(cfg):
    needs = learning_needs(cfg)
    recon = {(n.variant, n.setting) for n in needs if n.kind == "recon"}
    assert ORIGINAL in recon and VAE in recon
    assert {(t, "refiner") for t in cfg.tokenizer_variants} <= recon
    own_stage1 = {t for t in cfg.tokenizer_variants if cfg.stage1_source(t) == t}
    assert {v for v, s in recon if s == "diffusion"} == own_stage1
    assert "lpips-only" not in own_stage1 and "finetune-only" not in own_stage1
    gen = {(n.variant, n.setting) for n in needs if n.kind == "gen"}
    assert {(g, "main") for g in cfg.generator_variants} <= gen
    sweeps = cfg.evaluation.sweeps
    assert (sweeps.generator, f"cfg-linear-{sweeps.cfg_linear[-1]}") in gen
    assert (sweeps.generator, f"cfg-constant-{sweeps.cfg_constant[0]}") in gen
    assert not any(s.startswith(("steps-", "topp-")) for _, s in gen)
    assert table_inputs(cfg, LEARNING) == [n.path(cfg.out) for n in needs]


def test_table_holds_the_csv_values(cfg, results, tmp_path):
    frame, md, tex = _write(cfg, results, tmp_path)
    originals = _value(results, Input("recon", *ORIGINAL), "class_acc")
    vae = Input("recon", *VAE)
    b18 = Input("recon", "b18", "diffusion")
    ar_l = Input("gen", "ar-l", "main")
    assert f"| validation images | original-val | – | {originals:.3f} |" in md
    assert f"| frozen VAE (ceiling) | vae-frozen | {_value(results, vae, 'PSNR'):.2f} |" in md
    steps = cfg.tokenizer_variant("b18").sampler.steps
    assert f"| b18, flow ({steps} steps) | b18-diffusion | {_value(results, b18, 'PSNR'):.2f} |" in md
    assert f"| ar-l | ar-l-main | {_value(results, ar_l, 'class_acc'):.3f} |" in md
    linear = _value(results, Input("gen", "ar-l", "cfg-linear-3.0"), "class_acc")
    constant = _value(results, Input("gen", "ar-l", "cfg-constant-3.0"), "class_acc")
    assert f"| 3.0 | {linear:.3f} | {constant:.3f} |" in md
    assert "chance = 0.100 (1/10 classes)" in md
    row = frame[(frame.run == "vae-frozen") & (frame.metric == "class_acc")].iloc[0]
    assert row.value == pytest.approx(_value(results, vae, "class_acc"))
    assert row.protocol.startswith("classifier=classifier:1a2b3c4d labels=true")
    assert set(frame.block) == {learning.RECON, learning.GEN, learning.CFG}
    assert r"\begin{tabular}" in tex and "class\\_acc" in tex and "nan" not in md.lower()


@pytest.mark.parametrize(("run", "rule"), [(VAE, "eval_vae"), (ORIGINAL, "eval_reference")])
def test_missing_reference_csv_names_its_rule(run, rule, cfg, fresh_results, tmp_path):
    Input("recon", *run).path(fresh_results).unlink()
    with pytest.raises(MissingInput, match=rf"(?s)learning: missing.*{run[0]}-{run[1]}\.csv.*rule {rule}"):
        _write(cfg, fresh_results, tmp_path)


def test_csv_without_class_acc_is_rejected(cfg, fresh_results, tmp_path):
    path = Input("gen", "ar-xl", "main").path(fresh_results)
    csv = pd.read_csv(path)
    csv[csv.metric != "class_acc"].to_csv(path, index=False)
    with pytest.raises(TableError, match=r"ar-xl-main\.csv: no metric\(s\) \['class_acc'\]"):
        _write(cfg, fresh_results, tmp_path)
    values = learning.collect(cfg, fresh_results, strict=False)
    line = next(line for line in values if line.need == Input("gen", "ar-xl", "main"))
    assert values[line] == {"class_acc": None}


def test_cli(cfg, results, tmp_path):
    md = tmp_path / "l.md"
    argv = [
        "table",
        "--config",
        str(REPO / "config/config.yaml"),
        "--name",
        "learning",
        "--results",
        str(results),
    ]
    argv += ["--csv", str(tmp_path / "l.csv"), "--md", str(md), "--tex", str(tmp_path / "l.tex")]
    assert cli_main(argv) == 0
    assert "frozen VAE (ceiling)" in md.read_text()


def test_benchmark_prints_the_learning_figures(cfg, fresh_results):
    """`benchmarks/learning.py --out RESULTS` on a run: the same figures, and missing ones say so."""
    Input("gen", "ar-xxl", "main").path(fresh_results).unlink()
    resolved = paths.config_file(fresh_results, "0123456789abcdef")
    resolved.parent.mkdir(parents=True, exist_ok=True)
    resolved.write_text(config.dumps(config.load(REPO / "config/config.yaml", [])))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "learning.py"), "--out", str(fresh_results)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ar_l = _value(fresh_results, Input("gen", "ar-l", "main"), "class_acc")
    assert f"| ar-l | ar-l-main | {ar_l:.3f} |" in done.stdout
    assert f"| ar-xxl | ar-xxl-main | {learning.MISSING} |" in done.stdout
    assert "frozen VAE (ceiling)" in done.stdout and "chance = 0.100" in done.stdout
