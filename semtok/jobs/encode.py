"""Entry point of `workflow/rules/encode.smk` (SPEC §1): pre-encode one image shard into VAE latents
(image and flip) or SigLIP patch features (`semtok.data.encode`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from semtok import paths
from semtok.config import Config
from semtok.data.encode import KINDS, encode_shard
from semtok.jobs import EntryPoint


def encode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--split", required=True, choices=paths.SPLITS)
    parser.add_argument("--shard", required=True, type=int, help="shard number (e.g. 00003 or 3)")
    parser.add_argument("--input", required=True, help="image shard (semtok shard)")
    parser.add_argument("--output", required=True, help="feature shard to write")


def encode(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    desc = f"{args.kind} {paths.shard_name(args.split, args.shard)}"
    return encode_shard(cfg, args.kind, Path(args.input), Path(args.output), desc=desc)


ENTRY_POINTS = {"encode": EntryPoint(encode_arguments, encode)}
