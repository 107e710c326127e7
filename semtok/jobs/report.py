"""Entry points of `workflow/rules/report.smk` (docs/METHOD.md §6): one paper table (or the learning
table) from the metric CSVs, as CSV, Markdown and LaTeX (`table`); one paper figure as PNG and PDF
(`figure`); the per-rule resources table from the benchmark records (`resources`); a table's HTML page
for the report from its Markdown (`table-html`). What each reads is declared by semtok.report.spec;
the builders are semtok.report.tables, .learning, .figures, .resources and .html."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from semtok import paths
from semtok.config import Config
from semtok.jobs import EntryPoint
from semtok.report import claims, html, learning, resources
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


def resources_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", help="folder holding benchmarks/ (default: the config's out_dir)")
    parser.add_argument(
        "--profile",
        default="workflow/profiles/default/config.yaml",
        help="the workflow profile whose set-resources the rules ask for (default: %(default)s)",
    )
    parser.add_argument(
        "--patterns",
        nargs="*",
        default=[],
        metavar="RULE=PATTERN",
        help="each rule's benchmark file name with its wildcards, e.g. stage1=stage1_{tok}.tsv (the "
        "workflow passes those of its rules); records of no pattern are listed, not counted",
    )
    for ext in resources.FORMATS:
        parser.add_argument(f"--{ext}", help=f"output {ext} (default: <results>/tables/resources.{ext})")


def parse_patterns(items: list[str]) -> dict[str, str]:
    """["stage1=stage1_{tok}.tsv", ...] → {"stage1": "stage1_{tok}.tsv", ...}."""
    out = {}
    for item in items:
        rule, sep, pattern = item.partition("=")
        if not sep or not rule or not pattern:
            raise SystemExit(f"semtok resources: --patterns {item!r}: expected RULE=PATTERN")
        out[rule] = pattern
    return out


def resources_table(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    results = Path(args.results) if args.results else cfg.out
    outputs = {
        ext: Path(getattr(args, ext) or paths.table_file(results, resources.RESOURCES, ext))
        for ext in resources.FORMATS
    }
    return resources.write(
        results / "benchmarks",
        Path(args.profile),
        parse_patterns(args.patterns),
        outputs,
        forkserver=cfg.compute.forkserver,
    )


def table_html_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--md", required=True, help="a table's Markdown (tables/<name>.md)")
    parser.add_argument("--html", required=True, help="the HTML page to write")


def table_html(args: argparse.Namespace, cfg: None) -> dict[str, Any]:
    source, target = Path(args.md), Path(args.html)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(html.page(source.read_text(), source.stem))
    return {"table": source.stem, "outputs": [str(target)]}


ENTRY_POINTS = {
    "table": EntryPoint(table_arguments, table),
    "figure": EntryPoint(figure_arguments, figure),
    "resources": EntryPoint(resources_arguments, resources_table),
    "table-html": EntryPoint(table_html_arguments, table_html),
}
