"""semtok/cli/dispatch.py: a command that reads the experiment's settings never runs on a default it was
not given — a rule's printed command run by hand where $SEMTOK_CONFIG is unset stops and says how to
pass a settings file; commands that need none, and --help, run without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import semtok

ROOT = Path(__file__).resolve().parents[1]


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """`command` through bash, as Snakemake runs a rule's shell command, without SEMTOK_CONFIG."""
    env = {k: v for k, v in os.environ.items() if k not in ("SEMTOK_CONFIG", "SEMTOK_FORKSERVER")}
    env["PYTHONPATH"] = str(Path(semtok.__file__).parents[1])
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("config", "says"),
    [('--config "$SEMTOK_CONFIG"', "--config is empty"), ("", "no settings file")],
    ids=["printed rule command, variable unset", "no --config"],
)
def test_a_command_without_its_settings_file_stops_and_says_how_to_pass_one(tmp_path, config, says):
    """Run in the checkout, where config/config.yaml (the tiny default) exists: it used to be read."""
    done = shell(
        f"{sys.executable} -m semtok.cli index {config} --split train --output {tmp_path}/i.tsv", ROOT
    )
    assert done.returncode == 2, done.stderr
    assert (
        says in done.stderr
        and "--config FILE" in done.stderr
        and "<out_dir>/config/<hash>.json" in done.stderr
    )
    assert not (tmp_path / "i.tsv").exists()


def test_commands_that_need_no_settings_and_help_run_without_them(tmp_path):
    done = shell(f"{sys.executable} -m semtok.cli config-schema", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "properties" in json.loads(done.stdout)
    done = shell(f"{sys.executable} -m semtok.cli index --help", tmp_path)
    assert done.returncode == 0 and "--config" in done.stdout, done.stderr


def test_the_resolved_settings_file_runs_the_command(tmp_path):
    """What the message says to pass: the resolved JSON of a workflow run."""
    resolved = tmp_path / "results" / "config" / "0123abcd.json"
    resolved.parent.mkdir(parents=True)
    done = shell(f"{sys.executable} -m semtok.cli resolve-config --config config/config.yaml", ROOT)
    assert done.returncode == 0, done.stderr
    resolved.write_text(json.dumps(yaml.safe_load(done.stdout)))
    done = shell(f"{sys.executable} -m semtok.cli resolve-config", tmp_path)
    assert done.returncode == 2 and "the newest here: results/config/0123abcd.json" in done.stderr
    done = shell(
        f'export SEMTOK_CONFIG={resolved}; {sys.executable} -m semtok.cli resolve-config --config "$SEMTOK_CONFIG"',
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["run_id"] == "default"
