"""`semtok config-schema` and `semtok resolve-config`."""

from __future__ import annotations

import argparse
import json

import yaml

from semtok.config import Config, json_schema, to_dict

NEEDS_CONFIG = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", help="write here instead of stdout")


def run(args: argparse.Namespace, cfg: Config) -> None:
    if args.command == "config-schema":
        text = json.dumps(json_schema(), indent=2) + "\n"
    else:
        text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        print(text, end="")
