"""The default run's HTML report, opened in a real browser: its landing page, every table and figure as
a user reaches them (the landing page's link, then the result's view button); its resources table; the
notebooks on its CSVs (the session's `default_run`, tests/conftest.py)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from browser import Browser, Page, file_url
from notebook_run import NOTEBOOKS, check, execute

from semtok.report import landing
from semtok.report.spec import CLAIMS, FIGURES, REPORT_TABLES, RESOURCES

pytestmark = pytest.mark.slow

LINKS = "[...document.querySelectorAll('a[href^=\"javascript:app.showResultInfo\"]')]"


@pytest.fixture(scope="module")
def report(default_run, chromium):
    """The report, open on its landing page."""
    with Browser(chromium, timeout=120) as browser:
        page = browser.open(file_url(default_run.report))
        page.wait_for("document.body.innerText.includes('What was run')", timeout=60)
        yield page


def open_result(page: Page, label: str, target: str) -> str:
    """Click the landing page's link `label`, then the view button of the result it selects (file name
    `target`); returns the result's key in the report."""
    page.evaluate("app.setView({content: 'rulegraph', navbarMode: 'menu'})")  # back to the landing page
    page.wait_for("document.body.innerText.includes('What was run')")
    clicked = page.evaluate(
        f"(() => {{ const a = {LINKS}.find(a => a.textContent === {json.dumps(label)});"
        " if (!a) return false; a.click(); return true; })()"
    )
    assert clicked, f"no link {label!r} on the landing page"
    path = page.wait_for(
        f"app.state.resultPath?.endsWith({json.dumps('/' + target)}) && app.state.resultPath"
    )
    page.wait_for("document.querySelector('a[iconname=\"eye\"]') !== null")  # the result's view button
    page.evaluate("document.querySelector('a[iconname=\"eye\"]').click()")
    return path


def test_landing_page_says_what_the_run_is_and_links_every_table_and_figure(report, default_run):
    text = report.text()
    assert "SemTok reproduction: run default" in text
    assert "the built-in synthetic dataset: 10 classes" in text and "32×32 px" in text
    assert "stand-in classifier" in text and "How to read the tables" in text
    links = report.evaluate(f"{LINKS}.map(a => a.textContent)")
    figures = [*FIGURES, CLAIMS]
    expected = [landing.table_label(t) for t in REPORT_TABLES] + [landing.figure_label(f) for f in figures]
    assert links == expected
    assert "not in this report" not in text


@pytest.mark.parametrize("name", list(REPORT_TABLES))
def test_every_table_renders_in_the_report(report, default_run, name):
    md = (default_run.outputs / "tables" / f"{name}.md").read_text()
    path = open_result(report, landing.table_label(name), landing.table_target(name))
    report.wait_for(f"document.querySelector('iframe')?.src === results[{json.dumps(path)}].data_uri")
    frame = report.wait_for_frame_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    for row in rows[1:]:  # every cell of every row, numbers included, is in the rendered page
        for cell in row.strip("|").split(" | "):
            assert cell.strip().replace("\\|", "|") in frame, (name, cell)
    if "Notes:" in md:
        assert "Notes:" in frame


@pytest.mark.parametrize("name", [*FIGURES, CLAIMS])
def test_every_figure_shows_in_the_report(report, name):
    path = open_result(report, landing.figure_label(name), landing.figure_target(name))
    width = report.wait_for(
        f"(() => {{ const i = [...document.querySelectorAll('img')].find(i => i.src ==="
        f" results[{json.dumps(path)}].data_uri); return i && i.complete ? i.naturalWidth : 0; }})()"
    )
    assert width > 100


def test_resources_table_covers_every_rule_the_profile_sizes(default_run):
    """Every rule of the workflow profile ran in the default run and has a benchmark record."""
    profile = yaml.safe_load(
        (default_run.wf / "workflow" / "profiles" / "default" / "config.yaml").read_text()
    )
    with open(default_run.outputs / "tables" / f"{RESOURCES}.csv") as f:
        rows = {r["rule"]: r for r in csv.DictReader(f)}
    assert set(profile["set-resources"]) <= set(rows)
    for rule, row in rows.items():
        assert int(row["jobs"]) >= 1 and float(row["max_s"]) > 0, rule


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_run_on_the_default_runs_csvs(default_run, path, tmp_path):
    check(execute(path, default_run.outputs, tmp_path))
