"""`semtok plan`: the bill of `all_tables` before the run (semtok/plan.py), for the configs a run would
use, e.g.

    semtok plan --configfile config/paper.yaml site.yaml [--peak-tflops 989 --mfu 0.4]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from semtok.config import ConfigError, from_dict, merge_files
from semtok.jobs import EntryPoint

PROFILE = Path(__file__).resolve().parents[2] / "workflow" / "profiles" / "default" / "config.yaml"


def plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfile",
        nargs="+",
        default=["config/config.yaml"],
        help="config files, merged as Snakemake does",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="peak TFLOP/s of one GPU (default 989)"
    )
    parser.add_argument("--mfu", type=float, default=None, help="model FLOPs utilisation (default 0.40)")
    parser.add_argument("--profile", type=Path, default=PROFILE, help="workflow profile with the rules' GPUs")
    parser.add_argument("--output", type=Path, help="also write the table here (Markdown)")


def plan(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    from semtok import plan as bill

    peak = bill.PEAK_TFLOPS if args.peak_tflops is None else args.peak_tflops
    mfu = bill.MFU if args.mfu is None else args.mfu
    if peak <= 0 or not 0 < mfu <= 1:
        raise SystemExit("semtok plan: error: --peak-tflops must be > 0 and --mfu in (0, 1]")
    try:
        config = from_dict(merge_files(args.configfile), args.overrides)
    except ConfigError as err:
        raise SystemExit(f"semtok plan: error: {err}") from None
    found = args.profile.is_file()
    gpus = bill.profile_gpus(args.profile) if found else {}
    runtimes = bill.profile_runtimes(args.profile) if found else {}
    title = f"The bill of all_tables for {' + '.join(args.configfile)}"
    stages = bill.bill(config, gpus)
    text = bill.render(stages, peak, mfu, title, runtimes)
    print(text)
    if args.output:
        args.output.write_text(text)
    return {
        "flops": sum(s.flops for s in stages),
        "gpu_hours": sum(s.gpu_hours(peak, mfu) for s in stages),
        "peak_tflops": peak,
        "mfu": mfu,
    }


ENTRY_POINTS = {"plan": EntryPoint(plan_arguments, plan)}
