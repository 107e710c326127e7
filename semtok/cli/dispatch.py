"""The command table of `semtok <command>` and running one command in this process.

Snakemake rules only wire files to these commands; each can be run by hand. Modules are imported
lazily so that a job pays only for what it uses. Every command that reads the experiment's settings
takes `--config FILE` (YAML, the schema of semtok/config.py, or the resolved JSON the workflow writes
under <out_dir>/config/) and any number of `--set key.path=value` overrides; without it, or with an empty
one (a printed rule command run by hand where $SEMTOK_CONFIG is unset), it stops and says how to pass
one instead of running on some default.
`semtok.cli.main` hands a command to the fork server when one serves the run, else to `run` here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semtok.utils.process import job_finished

if TYPE_CHECKING:
    from semtok.config import Config


@dataclass(frozen=True)
class Command:
    """A `semtok` command: the module whose `ENTRY_POINTS` holds it (the job of its workflow stage),
    its help line, and whether it reads the experiment config."""

    module: str
    help: str
    needs_config: bool = True
    device: bool = False  # computes on `compute.device`: checked at start (semtok/utils/devices.py)


DESCRIPTION = (
    "SemTok (arXiv 2603.16373) as commands: every computation of the Snakemake workflow is one of them "
    "and runs by hand too. Each takes --config FILE (YAML, the schema of semtok/config.py, or the "
    "resolved settings <out_dir>/config/<hash>.json of a workflow run) and any number of --set "
    "key.path=value overrides; `semtok COMMAND --help` lists its options."
)
COMMANDS: dict[str, Command] = {
    "synthetic": Command("semtok.jobs.data", "write the synthetic ImageNet-like dataset"),
    "index": Command("semtok.jobs.data", "list a split of an ImageNet-layout folder and assign shards"),
    "shard": Command("semtok.jobs.data", "write one webdataset image shard (and its manifest)"),
    "data-summary": Command("semtok.jobs.data", "merge shard manifests into the data manifest and table"),
    "prefetch": Command("semtok.jobs.teachers", "download every pretrained component into the cache"),
    "teachers": Command(
        "semtok.jobs.teachers", "bootstrap the tiny frozen teachers on the configured data", device=True
    ),
    "encode": Command(
        "semtok.jobs.encode",
        "pre-encode one shard: VAE latents (image + flip) or SigLIP features",
        device=True,
    ),
    "stage1": Command(
        "semtok.jobs.tokenizer", "Stage I: generative pre-training of a tokenizer variant", device=True
    ),
    "stage2": Command(
        "semtok.jobs.tokenizer", "Stage II: one-step refiner fine-tuning of a tokenizer variant", device=True
    ),
    "dump-tokens": Command(
        "semtok.jobs.tokenizer", "encode one image shard (and flips) into token shards", device=True
    ),
    "train-ar": Command(
        "semtok.jobs.generator", "train a masked autoregressive generator variant", device=True
    ),
    "sample": Command(
        "semtok.jobs.generator", "sample images from a generator into an ADM-style npz", device=True
    ),
    "eval-reference": Command(
        "semtok.jobs.evaluation", "features of the validation images (the FID/PR reference)", device=True
    ),
    "reference-standin": Command(
        "semtok.jobs.evaluation",
        "write a stand-in for ADM's reference batch (evaluation.fid_reference: standin)",
        device=True,
    ),
    "eval-recon": Command(
        "semtok.jobs.evaluation", "reconstruction metrics of a tokenizer -> CSV", device=True
    ),
    "eval-gen": Command("semtok.jobs.evaluation", "generation metrics of a sample file -> CSV", device=True),
    "table": Command("semtok.jobs.report", "build one paper table from metric CSVs"),
    "figure": Command("semtok.jobs.report", "draw one paper figure"),
    "resources": Command(
        "semtok.jobs.report", "tabulate every rule's time and peak memory against the workflow profile"
    ),
    "table-html": Command(
        "semtok.jobs.report",
        "render a table's Markdown as the HTML page the report shows",
        needs_config=False,
    ),
    "install-profile": Command(
        "semtok.cli.cluster",
        "install the Snakemake site profile `slurm` for your account/partition",
        needs_config=False,
    ),
    "plan": Command(
        "semtok.cli.plan",
        "the bill of all_tables before the run: FLOPs and GPU-hours per stage",
        needs_config=False,
    ),
    "config-schema": Command("semtok.cli.schema", "print the JSON schema of the config", needs_config=False),
    "resolve-config": Command("semtok.cli.schema", "print the validated config (with overrides) as YAML"),
    "config-reference": Command(
        "semtok.cli.schema",
        "write the parameter reference (every key's type, range, default, paper and tiny values)",
        needs_config=False,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semtok", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def configure_threads(cfg: Config | None) -> None:
    """torch's CPU threads for the job (semtok/utils/devices.py: `compute.threads`, else the CPUs of its
    Slurm allocation shared by the node's processes, else OMP_NUM_THREADS / the library default). Set
    explicitly because a job forked from the fork server inherits the thread count torch read when the
    server imported it, before the job's environment existed: two 2-thread jobs on 2 cores ran sampling
    5x slower than two 1-thread jobs."""
    if cfg is not None and "torch" in sys.modules:  # a job that never imported torch needs no pool
        from semtok.utils.devices import job_threads

        threads = job_threads(cfg.compute)
        sys.modules["torch"].set_num_threads(threads)
        logging.getLogger("semtok").info("%d torch CPU thread(s)", threads)


def missing_config(given: str | None) -> str | None:
    """Why `--config` cannot be used (None when it names a file to load): not given, or empty."""
    if given is None:
        problem = "no settings file: this command reads the experiment's settings"
    elif not given.strip():
        problem = (
            '--config is empty: a command printed by Snakemake passes --config "$SEMTOK_CONFIG", which is '
            "unset outside the workflow"
        )
    else:
        return None
    written = sorted(Path("results", "config").glob("*.json"), key=lambda p: p.stat().st_mtime)
    newest = f"; the newest here: {written[-1]}" if written else ""
    return (
        f"{problem}. Pass --config FILE: a YAML config (e.g. config/config.yaml, config/paper.yaml) or the "
        f"resolved settings a workflow run wrote, <out_dir>/config/<hash>.json (the newest is the last run's"
        f"{newest}; export SEMTOK_CONFIG=that file to rerun a printed command)"
    )


def run(argv: list[str]) -> int:
    """Run `semtok argv` in this process; returns the exit status (errors of the arguments exit 2).
    Once the command has returned, the job is finished (`job_finished`): a checkpoint signal to a
    command's own process (`semtok.cli.main.entry`) no longer fails it."""
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints help or a clear "invalid choice" error
        return 2
    name, rest = argv[0], argv[1:]
    from semtok.utils.logs import stamp_streams

    stamp_streams()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        help="experiment YAML, or the resolved JSON <out_dir>/config/<hash>.json of a workflow run",
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value",
    )
    known, _ = common.parse_known_args(rest)
    # Load the config and set the environment (weights cache, offline mode) before the command's
    # libraries are imported: huggingface_hub and torch read their cache locations at import time.
    command = COMMANDS[name]
    cfg, config_error = None, missing_config(known.config) if command.needs_config else None
    if command.needs_config and config_error is None:
        try:
            from semtok.config import load
            from semtok.registry import configure_environment

            cfg = load(known.config, known.overrides)
            configure_environment(cfg)
        except (ValueError, FileNotFoundError) as err:
            config_error = str(err)
    module = importlib.import_module(command.module)
    arguments, execute = module.ENTRY_POINTS[name]
    parser = argparse.ArgumentParser(prog=f"semtok {name}", description=command.help, parents=[common])
    arguments(parser)
    args = parser.parse_args(rest)
    args.command = name
    if config_error is not None:
        parser.error(config_error)
    if command.device:
        from semtok.utils.devices import job_device

        job_device(cfg.compute)  # stops a GPU job on a node without a usable GPU before any work
    configure_threads(cfg)
    result = execute(args, cfg)
    job_finished()
    if isinstance(result, dict):
        print(json.dumps(result, indent=2, default=str))
    return 0
