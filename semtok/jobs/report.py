"""Entry points of `workflow/rules/report.smk` (SPEC §6): one paper table (or the learning table) from
the metric CSVs, as CSV, Markdown and LaTeX (`table`), and one paper figure as PNG and PDF (`figure`).
What each reads is declared by semtok.report.spec; the builders are semtok.report.tables,
.learning and .figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from semtok import paths
from semtok.config import Config
from semtok.jobs import EntryPoint
from semtok.report import claims, learning
from semtok.report.figures import draw
from semtok.report.reported import TABLES
from semtok.report.spec import CLAIMS, FIGURES, LEARNING
from semtok.report.tables import write_table

TABLE_FORMATS = ("csv", "md", "tex")
FIGURE_FORMATS = ("png", "pdf")


def table_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        required=True,
        choices=[*TABLES, LEARNING, CLAIMS],
        help="paper table (or the learning or claims table) to build",
    )
    parser.add_argument("--results", help="folder holding metrics/ (default: the config's out_dir)")
    for ext in TABLE_FORMATS:
        parser.add_argument(f"--{ext}", help=f"output {ext} (default: <results>/tables/<name>.{ext})")


def table(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    results = Path(args.results) if args.results else cfg.out
    outputs = {
        ext: Path(getattr(args, ext) or paths.table_file(results, args.name, ext)) for ext in TABLE_FORMATS
    }
    if args.name == LEARNING:
        return learning.write(cfg, results, outputs)
    if args.name == CLAIMS:
        return claims.write(cfg, results, outputs)
    return write_table(TABLES[args.name], cfg, results, outputs)


def figure_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", required=True, choices=[*FIGURES, CLAIMS], help="paper figure (or the claims plot) to draw"
    )
    parser.add_argument(
        "--results", help="folder holding metrics/ and samples/ (default: the config's out_dir)"
    )
    for ext in FIGURE_FORMATS:
        parser.add_argument(f"--{ext}", help=f"output {ext} (default: <results>/figures/<name>.{ext})")


def figure(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    results = Path(args.results) if args.results else cfg.out
    fig = claims.figure(cfg, results) if args.name == CLAIMS else draw(args.name, cfg, results)
    outputs = [
        Path(getattr(args, ext) or paths.figure_file(results, args.name, ext)) for ext in FIGURE_FORMATS
    ]
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.05)
    return {"figure": args.name, "outputs": [str(p) for p in outputs]}


ENTRY_POINTS = {"table": EntryPoint(table_arguments, table), "figure": EntryPoint(figure_arguments, figure)}
