"""The notebooks execute headless on a run's metric CSVs and plot class_acc (on the default run's CSVs:
tests/workflow/test_report.py)."""

from __future__ import annotations

import pytest
from notebook_run import NOTEBOOKS, check, execute


def test_the_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"reconstruction.ipynb", "generation.ipynb", "claims.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_synthetic_results(path, results, tmp_path):
    check(execute(path, results, tmp_path))
