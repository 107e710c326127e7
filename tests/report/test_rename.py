"""The report survives renaming variants in the config: which variant fills each table row and figure
panel is the config's `report` section, so a renamed config builds the whole DAG (`snakemake -n
all_tables`) and every table and figure from fixture CSVs of the renamed runs."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_results

from semtok.config import from_dict
from semtok.jobs.report import FIGURE_FORMATS, TABLE_FORMATS
from semtok.report import claims, learning
from semtok.report.figures import draw
from semtok.report.reported import TABLES
from semtok.report.spec import CLAIMS, FIGURES, LEARNING, all_needs
from semtok.report.tables import write_table

TOKENIZERS = {"b18": "semtok-18", "no-sem": "plain-1d"}
GENERATORS = {"ar-l": "semtok-ar-l", "ar-l-grid2d": "grid-ar"}
ROLES = {
    "tokenizers": {"semtok": "semtok-18", "no_semantics": "plain-1d"},
    "generators": {"ar_l": "semtok-ar-l", "grid2d": "grid-ar"},
}


def renamed(raw: dict) -> dict:
    """config/config.yaml with b18, no-sem, ar-l and ar-l-grid2d renamed wherever the config names them."""
    raw = copy.deepcopy(raw)
    raw["tokenizer_variants"] = {TOKENIZERS.get(k, k): v for k, v in raw["tokenizer_variants"].items()}
    for variant in raw["tokenizer_variants"].values():
        source = variant.get("stage1", {}).get("from_variant")
        if source in TOKENIZERS:
            variant["stage1"]["from_variant"] = TOKENIZERS[source]
    raw["generator"]["tokenizer"] = TOKENIZERS.get(
        raw["generator"]["tokenizer"], raw["generator"]["tokenizer"]
    )
    raw["generator_variants"] = {GENERATORS.get(k, k): v for k, v in raw["generator_variants"].items()}
    for variant in raw["generator_variants"].values():
        if variant.get("tokenizer") in TOKENIZERS:
            variant["tokenizer"] = TOKENIZERS[variant["tokenizer"]]
    sweeps = raw["evaluation"]["sweeps"]
    sweeps["generator"] = GENERATORS.get(sweeps["generator"], sweeps["generator"])
    raw["report"] = {**ROLES, "claims": raw["report"]["claims"]}  # the seed replicas keep their names
    return raw


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def old_names(text: str) -> list[str]:
    """The old names in `text` (not as parts of other names)."""
    return re.findall(r"(?<![\w-])(?:b18|no-sem|ar-l|ar-l-grid2d)(?![\w-])", text)


def test_every_target_reads_the_renamed_runs(raw):
    cfg = from_dict(renamed(raw))
    runs = {(need.variant, need.setting) for need in all_needs(cfg)}
    assert (
        ("semtok-18", "refiner") in runs
        and ("semtok-ar-l", "main") in runs
        and ("grid-ar", "progressive") in runs
    )
    assert not old_names(" ".join(v for v, _ in runs))


def test_every_table_and_figure_builds_from_the_renamed_runs(raw, tmp_path):
    cfg = from_dict(renamed(raw))
    results = write_results(cfg, tmp_path / "results")
    for name in [*TABLES, LEARNING, CLAIMS]:
        outputs = {ext: tmp_path / "tables" / f"{name}.{ext}" for ext in TABLE_FORMATS}
        if name == LEARNING:
            learning.write(cfg, results, outputs)
        elif name == CLAIMS:
            claims.write(cfg, results, outputs)
        else:
            write_table(TABLES[name], cfg, results, outputs)
        assert not old_names(outputs["md"].read_text()), name
    table4 = (tmp_path / "tables" / "table4.md").read_text()
    assert (
        "plain-1d-refiner + ar-l-no-sem-main" in table4 and "semtok-18-refiner + semtok-ar-l-main" in table4
    )
    table3 = (tmp_path / "tables" / "table3.md").read_text()
    assert "2D-grid tokenizer (grid-ar)" in table3  # the notes name the variant of their role
    for name in FIGURES:
        figure = draw(name, cfg, results)
        assert figure.axes, name
        figure.savefig(tmp_path / f"{name}.{FIGURE_FORMATS[0]}")


def dry_run(config: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "all_tables", "-n", "--quiet", "rules"]
    command += ["--configfile", str(config), "--config", f"out_dir={out}"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_the_dag_of_a_renamed_config_is_the_default_dag(raw, tmp_path):
    default, changed = tmp_path / "default.yaml", tmp_path / "renamed.yaml"
    default.write_text(yaml.safe_dump(raw))
    changed.write_text(yaml.safe_dump(renamed(raw)))
    counts = []
    for config in (default, changed):
        done = dry_run(config, tmp_path / config.stem)
        assert done.returncode == 0, done.stderr[-3000:]
        counts.append(job_counts(done.stdout + done.stderr))
    assert counts[0] == counts[1] and counts[0]["table4"] == 1 and counts[0]["train_ar"] == 10
