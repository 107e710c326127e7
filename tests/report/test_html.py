"""Tables as HTML pages: the Markdown's tables and notes, rendered by a real browser."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from browser import Browser, file_url

from semtok.cli.main import main as cli_main
from semtok.report import html
from semtok.report.reported import TABLES
from semtok.report.tables import write_table


@pytest.fixture(scope="module")
def table4(cfg, results, tmp_path_factory) -> dict:
    """Table 4 of the synthetic results as CSV, Markdown and its HTML page (built by the command)."""
    out = tmp_path_factory.mktemp("table4")
    files = {ext: out / f"table4.{ext}" for ext in ("csv", "md", "tex")}
    write_table(TABLES["table4"], cfg, results, files)
    files["html"] = out / "table4.html"
    assert cli_main(["table-html", "--md", str(files["md"]), "--html", str(files["html"])]) == 0
    return files


def test_page_holds_the_markdowns_table_and_notes(table4):
    page = table4["html"].read_text()
    md = table4["md"].read_text()
    assert page.startswith("<!doctype html>") and "<title>table4</title>" in page
    assert page.count("<tr>") == 1 + len(TABLES["table4"].rows)  # header and rows
    rows = [line for line in md.splitlines() if line.startswith("| none")]
    for cell in rows[0].strip("|").split("|")[3:]:
        assert f">{cell.strip()}</td>" in page
    assert page.count("<li>") == md.count("\n- ")  # every note, run and protocol line
    assert "<strong>Table 4: Ablation on the Semantic Alignment Constraint.</strong>" in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: no external resources


def test_numeric_cells_are_right_aligned_and_text_cells_not():
    body = html.render("| a | b | c | d |\n|---|---|---|---|\n| SemTok (Ours) | 22.19 | n/c | +0.12 |\n")
    cells = re.findall(r"<td( class=\"num\")?>([^<]*)</td>", body)
    assert cells == [
        ("", "SemTok (Ours)"),
        (' class="num"', "22.19"),
        (' class="num"', "n/c"),
        (' class="num"', "+0.12"),
    ]


def test_raw_html_in_a_table_is_shown_not_run():
    body = html.render("| x |\n|---|\n| <script>alert(1)</script> |\n")
    assert "<script>" not in body and "&lt;script&gt;" in body


def test_a_browser_renders_every_number_of_the_table(table4, chromium):
    frame = pd.read_csv(table4["csv"])
    md_rows = [
        line for line in table4["md"].read_text().splitlines() if line.startswith("| ") and "---" not in line
    ]
    with Browser(chromium) as browser:
        page = browser.open(file_url(table4["html"]))
        shown = page.text()
        rendered_cells = page.evaluate("document.querySelectorAll('td').length")
        numeric = page.evaluate("document.querySelectorAll('td.num').length")
        width = page.evaluate("document.querySelector('table').getBoundingClientRect().width")
    assert rendered_cells == sum(len(r.strip("|").split("|")) for r in md_rows[1:])
    assert numeric > 0 and width > 300
    for row in md_rows[1:]:
        for cell in row.strip("|").split("|"):
            assert cell.strip() in shown
    for label in frame.row.unique():
        assert label in shown
    assert "Notes:" in shown and "n/c rFID" in shown and "Protocols:" in shown


def test_a_caption_with_the_papers_footnote_stars_stays_one_bold_title(cfg, results, tmp_path):
    files = {ext: tmp_path / f"table1.{ext}" for ext in ("csv", "md", "tex")}
    write_table(TABLES["table1"], cfg, results, files)
    body = html.render(files["md"].read_text())
    assert "<strong>Table 1: Reconstruction results of SOTA tokenizers on ImageNet (256×256). *: a" in body
    assert "<em>" not in body
