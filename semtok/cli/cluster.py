"""`semtok install-profile`: write the Snakemake *site* profile `slurm`, the one file that says how this
cluster runs jobs (executor, account, partitions, status queries, retries).

    semtok install-profile --account ACCOUNT --partition cpu [--gpu-partition gpu]
    snakemake --profile slurm all_tables

Snakemake finds `--profile slurm` in ./slurm/, then in its user and site configuration folders
(platformdirs: ~/.config/snakemake/ or $XDG_CONFIG_HOME/snakemake/ on Linux, ~/Library/Application
Support/snakemake/ on macOS; /etc/xdg/snakemake/). The default --dest is the user folder's `slurm`. What each rule needs (threads, memory, GPUs, runtime) lives in the workflow
profile (profiles/default/config.yaml of the workflow), which Snakemake loads on top of this one; that
profile never names an executor, an account or a partition, nor sets `default-resources` (it would
replace this profile's), and this one never names a rule's resources.
Settings are those of snakemake-executor-plugin-slurm (`slurm-*` keys).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from semtok.jobs import EntryPoint

# Rules with one job per shard: submitted as one Slurm job array per rule instead of one sbatch each.
ARRAY_RULES = ("shard_images", "encode_shard", "dump_tokens")

PROFILE = """\
# Snakemake site profile for semtok, written by
#   semtok install-profile {command}
# Use: snakemake --profile slurm all_tables. Rule resources come from the workflow's own profile.
executor: slurm
jobs: {jobs}
# a failed job is resubmitted twice (node failures, preemption) before the run gives up on it
retries: 2
# shared file systems can show a job's outputs on the submit host with a delay
latency-wait: 60
rerun-incomplete: true
keep-going: true
printshellcmds: true
# job states from `{status_command}`; squeue needs no Slurm accounting (slurmdbd/sacct)
slurm-status-command: {status_command}
slurm-array-jobs: {array_rules}
{account_settings}{partition_settings}
# Software deployment is left to you: jobs are submitted with --export=ALL and run the `semtok` and
# `snakemake` found on the PATH you submit from. Add `software-deployment-method: apptainer` (or
# conda) here if your site runs jobs in containers.
"""

# The GPU partition is chosen per job by the plugin from the job's `gpu`/`gres` resource.
PARTITIONS = """\
# Partitions for semtok jobs, written by `semtok install-profile`: GPU jobs go to {gpu}, others to {cpu}.
partitions:
  {cpu}:
    max_gpu: 0
  {gpu}:
    max_gpu: {gpus}
"""


def profile_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--account", help="Slurm account (sbatch -A) every job is charged to")
    who.add_argument("--no-account", action="store_true", help="the cluster has no accounts")
    parser.add_argument("--partition", help="partition of CPU jobs (default: the cluster's default)")
    parser.add_argument("--gpu-partition", help="partition of GPU jobs (default: the --partition)")
    parser.add_argument(
        "--gpus-per-node", type=int, default=8, help="most GPUs one job may ask of --gpu-partition"
    )
    parser.add_argument(
        "--dest",
        type=Path,
        help=f"profile folder (default: {user_profile_dir()}, found by `--profile slurm`)",
    )
    parser.add_argument("--jobs", type=int, default=100, help="most Slurm jobs queued at once")
    parser.add_argument(
        "--status-command",
        choices=("squeue", "sacct"),
        default="squeue",
        help="how job states are queried; sacct needs Slurm accounting (default: %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing profile")


def snakemake_dirs() -> Any:
    """The configuration folders Snakemake searches for named profiles (the same platformdirs call as
    snakemake.common.get_appdirs; platformdirs comes with Snakemake)."""
    from platformdirs import AppDirs

    return AppDirs("snakemake", "snakemake")


def user_profile_dir() -> Path:
    """Where `snakemake --profile slurm` finds the site profile of this user."""
    return Path(snakemake_dirs().user_config_dir) / "slurm"


def _yaml(value: str) -> str:
    """A YAML scalar holding `value` as a string (JSON strings are YAML)."""
    return json.dumps(value)


def _resource(name: str, value: str) -> str:
    """A `default-resources` entry; the value is a Python string literal, since Snakemake evaluates
    resource values as expressions."""
    return f"  - {_yaml(f'{name}={value!r}')}\n"


def render(args: argparse.Namespace, dest: Path) -> dict[str, str]:
    """File name -> text of the profile folder `dest` for the parsed `install-profile` arguments."""
    if args.gpu_partition and not args.partition:
        raise ValueError("--gpu-partition needs --partition (the partition of CPU jobs)")
    if args.jobs < 1 or args.gpus_per_node < 1:
        raise ValueError("--jobs and --gpus-per-node must be positive")
    resources = "" if args.no_account else _resource("slurm_account", args.account)
    files = {}
    partition_settings = ""
    if args.gpu_partition:
        files["partitions.yaml"] = PARTITIONS.format(
            cpu=_yaml(args.partition), gpu=_yaml(args.gpu_partition), gpus=args.gpus_per_node
        )
        partition_settings = f"slurm-partition-config: {_yaml(str(dest / 'partitions.yaml'))}\n"
    elif args.partition:
        resources += _resource("slurm_partition", args.partition)
    account_settings = "slurm-no-account: true\n" if args.no_account else ""
    if resources:
        partition_settings += "default-resources:\n" + resources
    files["config.yaml"] = PROFILE.format(
        command=_command_line(args),
        jobs=args.jobs,
        status_command=args.status_command,
        array_rules=_yaml(",".join(ARRAY_RULES)),
        account_settings=account_settings,
        partition_settings=partition_settings,
    )
    return files


def _command_line(args: argparse.Namespace) -> str:
    words = ["--no-account"] if args.no_account else ["--account", args.account]
    if args.partition:
        words += ["--partition", args.partition]
    if args.gpu_partition:
        words += ["--gpu-partition", args.gpu_partition, "--gpus-per-node", str(args.gpus_per_node)]
    return " ".join(words + ["--jobs", str(args.jobs), "--status-command", args.status_command])


def install_profile(args: argparse.Namespace, cfg: Any) -> None:
    dest = (args.dest or user_profile_dir()).expanduser().resolve()
    try:
        files = render(args, dest)
    except ValueError as err:
        raise SystemExit(f"semtok install-profile: error: {err}") from None
    existing = [name for name in files if (dest / name).exists()]
    if existing and not args.force:
        raise SystemExit(
            f"semtok install-profile: error: {dest / existing[0]} exists; pass --force to overwrite it"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (dest / name).write_text(text)
    print(f"wrote {', '.join(str(dest / name) for name in files)}:\n")
    print(files["config.yaml"])
    print(f"Run the workflow on Slurm with: snakemake --profile {_profile_arg(dest)} all_tables")


def _profile_arg(dest: Path) -> str:
    """What to pass to `--profile` for `dest`: its name where Snakemake finds profiles by name."""
    dirs = snakemake_dirs()
    search = [Path(d).expanduser().resolve() for d in (dirs.user_config_dir, dirs.site_config_dir)]
    return dest.name if dest.parent in search else str(dest)


ENTRY_POINTS = {"install-profile": EntryPoint(profile_arguments, install_profile)}
