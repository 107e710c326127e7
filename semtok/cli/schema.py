"""`semtok config-schema`, `semtok resolve-config` and `semtok config-reference`: the config's JSON
schema, a validated config, and the parameter reference (config/README.md)."""

from __future__ import annotations

import argparse
import json

import yaml

from semtok import config_reference
from semtok.config import Config, json_schema, to_dict
from semtok.jobs import EntryPoint


def output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", help="write here instead of stdout")


def write(text: str, output: str | None) -> None:
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        print(text, end="")


def config_schema(args: argparse.Namespace, cfg: Config) -> None:
    write(json.dumps(json_schema(), indent=2) + "\n", args.output)


def resolve_config(args: argparse.Namespace, cfg: Config) -> None:
    write(yaml.safe_dump(to_dict(cfg), sort_keys=False), args.output)


def reference_arguments(parser: argparse.ArgumentParser) -> None:
    output_arguments(parser)
    parser.add_argument(
        "--paper", default="config/paper.yaml", help="the paper's config (default: %(default)s)"
    )
    parser.add_argument(
        "--tiny", default="config/config.yaml", help="the tiny default (default: %(default)s)"
    )


def config_reference_page(args: argparse.Namespace, cfg: None) -> None:
    write(config_reference.write(args.paper, args.tiny), args.output)


ENTRY_POINTS = {
    "config-schema": EntryPoint(output_arguments, config_schema),
    "resolve-config": EntryPoint(output_arguments, resolve_config),
    "config-reference": EntryPoint(reference_arguments, config_reference_page),
}
