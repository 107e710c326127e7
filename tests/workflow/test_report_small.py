"""The HTML report on a small real run, in seconds rather than the default run's minutes: one table's
page (the data summary) built by the workflow's own rules, `snakemake --report`, and the report opened
in Chromium — the landing page from the validated config, a link to the table the report holds, the
others named as not in it, and the table rendered when the user views it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from browser import Browser, file_url

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "data.synthetic={num_classes: 3, train_per_class: 4, val_per_class: 2, min_size: 36, max_size: 44, seed: 0}",
    "data.resolution=32",
    "compute.forkserver=false",
]


def snakemake(wf: Path, out: Path, *args: str) -> None:
    overrides = json.dumps(SMALL)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--config",
        f"out_dir={out}",
        f"overrides={overrides}",
    ]
    done = subprocess.run(command, cwd=wf, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def test_report_of_one_table_opens_on_its_landing_page(tmp_path, chromium):
    wf, out = tmp_path / "wf", tmp_path / "results"
    wf.mkdir()
    shutil.copy(REPO / "Snakefile", wf)
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, wf / folder)
    target = str(out / "tables" / "data_summary.html")
    snakemake(wf, out, target, "--cores", "2")
    snakemake(wf, out, target, "--report", str(tmp_path / "report.html"))
    md = (out / "tables" / "data_summary.md").read_text()
    train = next(line for line in md.splitlines() if line.startswith("| train"))
    with Browser(chromium, timeout=120) as browser:
        page = browser.open(file_url(tmp_path / "report.html"))
        page.wait_for("document.body.innerText.includes('What was run')", timeout=60)
        text = page.text()
        assert "the built-in synthetic dataset: 3 classes, 4 training and 2 validation images a class" in text
        assert "Table 4 (not in this report)" in text and "Figure 7 (not in this report)" in text
        page.evaluate(
            "[...document.querySelectorAll('a')].find(a => a.textContent === 'Data summary').click()"
        )
        path = page.wait_for("app.state.resultPath?.endsWith('/data_summary.html') && app.state.resultPath")
        page.wait_for("document.querySelector('a[iconname=\"eye\"]') !== null")
        page.evaluate("document.querySelector('a[iconname=\"eye\"]').click()")
        page.wait_for(f"document.querySelector('iframe')?.src === results[{json.dumps(path)}].data_uri")
        frame = page.wait_for_frame_text()
    for cell in train.strip("|").split("|"):  # train, images, classes, converted, rejected, shards
        assert cell.strip() in frame
