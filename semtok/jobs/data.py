"""Entry points of `workflow/rules/data.smk` (SPEC §1): the synthetic dataset, the index of a split,
one image shard and its manifest, and the data summary. The data layer is `semtok.data`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from semtok import paths
from semtok.config import Config
from semtok.data.imagenet import DatasetError, build_index, read_index, write_index
from semtok.data.shards import write_image_shard, write_json
from semtok.data.summary import merge_manifests, read_manifest, table_rows, to_csv, to_markdown
from semtok.data.synthetic import write_dataset
from semtok.jobs import EntryPoint
from semtok.utils.io import atomic_path


def synthetic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="dataset folder (ImageNet layout)")


def synthetic(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return write_dataset(cfg.data.synthetic, Path(args.output))


def index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", required=True, choices=paths.SPLITS)
    parser.add_argument("--output", required=True, help="index TSV (key, path, cls, wnid, shard, rejected)")


def index(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    try:
        rows, rejected = build_index(cfg, args.split)
    except DatasetError as err:
        sys.exit(f"semtok index: {err}")
    write_index(rows, Path(args.output))
    for row in rejected:
        print(f"semtok index: not an image to shard ({row.rejected}): {row.path}", file=sys.stderr)
    images = [r for r in rows if not r.rejected]
    return {
        "split": args.split,
        "images": len(images),
        "classes": len({r.cls for r in images}),
        "shards": rows[-1].shard + 1,
        "rejected": dict(Counter(r.rejected for r in rejected)),
    }


def shard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", required=True, choices=paths.SPLITS)
    parser.add_argument("--shard", required=True, type=int, help="shard number (e.g. 00003 or 3)")
    parser.add_argument("--index", required=True, help="index TSV of the split (semtok index)")
    parser.add_argument("--output", required=True, help="webdataset tar to write")
    parser.add_argument("--manifest", required=True, help="manifest JSON to write")


def shard(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    rows = [r for r in read_index(Path(args.index)) if r.shard == args.shard]
    if not rows:
        raise SystemExit(f"semtok shard: no images of shard {args.shard} in {args.index}")
    manifest = write_image_shard(
        rows,
        Path(args.output),
        resolution=cfg.data.resolution,
        quality=cfg.data.jpeg_quality,
        desc=paths.shard_name(args.split, args.shard),
    )
    manifest = {"split": args.split, "index": args.shard, **manifest}
    write_json(Path(args.manifest), manifest)
    return {"split": args.split, "shard": args.shard, **manifest["counts"]}


def summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifests", nargs="+", required=True, help="per-shard manifest JSONs")
    parser.add_argument("--output", required=True, help="data manifest JSON")
    parser.add_argument("--csv", required=True, help="summary table (CSV)")
    parser.add_argument("--md", required=True, help="summary table (Markdown)")


def summary(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    try:
        manifests = [read_manifest(Path(p)) for p in args.manifests]
    except ValueError as err:
        raise SystemExit(f"semtok data-summary: {err}") from None
    merged = merge_manifests(manifests)
    write_json(Path(args.output), merged)
    rows = table_rows(merged)
    for path, text in ((args.csv, to_csv(rows)), (args.md, to_markdown(rows))):
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(text)
    return {"splits": rows, "reasons": merged["reasons"]}


ENTRY_POINTS = {
    "synthetic": EntryPoint(synthetic_arguments, synthetic),
    "index": EntryPoint(index_arguments, index),
    "shard": EntryPoint(shard_arguments, shard),
    "data-summary": EntryPoint(summary_arguments, summary),
}
