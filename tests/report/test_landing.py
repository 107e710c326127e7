"""The landing page: what the run is, from the validated config, and a link to every table and figure
that the report holds, rendered as Snakemake renders its workflow description (Jinja, then docutils)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from docutils.core import publish_parts
from jinja2 import Environment

from semtok.config import load
from semtok.report import landing
from semtok.report.spec import CLAIMS, FIGURES, REPORT_TABLES

REPO = Path(__file__).resolve().parents[2]


def render(rst: str, targets: list[str]) -> str:
    """HTML of the page as Snakemake's report builds it: its link targets appended, Jinja, docutils."""
    files = [SimpleNamespace(target=t, path=f"results/x/{t}") for t in targets]
    links = (
        "\n" + "".join(f"\n.. _{f.target}: javascript:app.showResultInfo('{f.path}')" for f in files) + "\n"
    )
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(rst + links).render(
        snakemake=SimpleNamespace(config={}), categories={}, files=files
    )
    return publish_parts(text, writer="html", settings_overrides={"report_level": 1})["html_body"]


ALL = [landing.table_target(t) for t in REPORT_TABLES] + [
    landing.figure_target(f) for f in [*FIGURES, CLAIMS]
]


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml"])
def test_every_table_and_figure_is_linked(config):
    cfg = load(REPO / "config" / config)
    page = render(landing.description(cfg, Path("results/config/0123.json")), ALL)
    assert "system-message" not in page and "problematic" not in page  # docutils found nothing wrong
    links = re.findall(r"javascript:app\.showResultInfo\('results/x/([^']+)'\)\">([^<]+)</a>", page)
    assert [target for target, _ in links] == ALL
    assert dict(links)["table4.html"] == "Table 4" and dict(links)["fig7.png"] == "Figure 7"
    assert dict(links)["learning.html"] == "Learning" and dict(links)["table7.png"] == "Table 7 (visual)"
    assert dict(links)["claims.html"] == "Claims" and dict(links)["claims.png"] == "Claims (visual)"
    assert "Reconstruction results of SOTA tokenizers on ImageNet (256×256). *: a continuous" in page


def test_results_the_report_lacks_are_named_not_linked(cfg):
    page = render(landing.description(cfg, Path("c.json")), ["table4.html"])
    assert "system-message" not in page
    assert page.count("showResultInfo") == 1
    assert "Table 1 (not in this report)" in page and "Figure 7 (not in this report)" in page


def test_the_run_is_described_from_the_validated_config():
    cfg = load(
        REPO / "config" / "config.yaml",
        ["run_id=my-run", "data.resolution=64", "generator.sample.per_class=7"],
    )
    page = render(landing.description(cfg, Path("results/config/abcd.json")), ALL)
    assert "run <tt" in page or "run <code" in page
    assert "my-run" in page and "64×64 px" in page and "7 samples a class" in page
    assert "stand-in classifier" in page and "the validation images" in page  # offline protocol
    assert "results/config/abcd.json" in page
    paper = render(landing.description(load(REPO / "config" / "paper.yaml"), Path("c.json")), ALL)
    assert "ImageNet" in paper and "Inception-v3" in paper and "VIRTUAL_imagenet256_labeled.npz" in paper
    assert "200,000 steps" in paper


def test_config_values_cannot_inject_markup_or_template_code():
    cfg = load(REPO / "config" / "config.yaml", ["run_id='{{ 7 * 7 }}_x*y`z'"])
    page = render(landing.description(cfg, Path("c.json")), ALL)
    assert "system-message" not in page
    assert "{{ 7 * 7 }}_x*y" in page and "49" not in page


def test_written_once_next_to_the_settings_and_named_by_content(cfg, tmp_path):
    settings = tmp_path / "config" / "0123.json"
    first = landing.write(cfg, settings)
    assert first.parent == settings.parent and first.read_text() == landing.description(cfg, settings)
    stamp = first.stat().st_mtime_ns
    assert landing.write(cfg, settings) == first and first.stat().st_mtime_ns == stamp
    other = landing.write(load(REPO / "config" / "config.yaml", ["run_id=other"]), settings)
    assert other != first and first.exists()
