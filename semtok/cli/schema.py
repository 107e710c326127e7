"""`semtok config-schema` and `semtok resolve-config`: the config's JSON schema and a validated config."""

from __future__ import annotations

import argparse
import json

import yaml

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


ENTRY_POINTS = {
    "config-schema": EntryPoint(output_arguments, config_schema),
    "resolve-config": EntryPoint(output_arguments, resolve_config),
}
