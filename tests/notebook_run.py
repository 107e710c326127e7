"""Executing the notebooks as the README says (`jupyter nbconvert --to notebook --execute`) on a run's
results, for tests/report/test_notebooks.py (synthetic CSVs) and tests/workflow/test_report.py (the
default run's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def execute(path: Path, results: Path, out: Path) -> nbformat.NotebookNode:
    """Run notebook `path` on the run in `results` (`SEMTOK_RESULTS`); returns the executed notebook."""
    env = {**os.environ, "SEMTOK_RESULTS": str(results)}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend: figures become outputs
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--output-dir",
            str(out),
            str(path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return nbformat.read(out / path.name, as_version=4)


def class_acc_plots(nb: nbformat.NotebookNode) -> int:
    """Images drawn by the cells that plot class_acc."""
    return sum(
        "image/png" in output.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code" and 'metric == "class_acc"' in cell.source
        for output in cell.outputs
    )


def check(nb: nbformat.NotebookNode) -> None:
    """No cell failed, the notebook shows results, and it plots class_acc (the claims notebook: its
    dot plot of every finding's effect in noise units, which holds class_acc rows among others)."""
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors[0].get("evalue")
    assert any(o.output_type in ("execute_result", "display_data") for o in outputs)
    if nb.metadata.get("semtok", {}).get("plots") == "claims":
        assert any("image/png" in o.get("data", {}) for o in outputs)
    else:
        assert class_acc_plots(nb) >= 1
