"""`semtok index`: list one split of an ImageNet-layout folder and assign every image to a shard (SPEC §1).

Layouts accepted:
    ROOT/train/nXXXXXXXX/*.JPEG                          (always; its sorted synsets are the classes 0..N-1)
    ROOT/val/nXXXXXXXX/*.JPEG                            per-class val folder, or
    ROOT/val/*.JPEG + ROOT/LOC_val_solution.csv          the flat val folder; the CSV (ImageId,
                                                         PredictionString) gives each image's synset as the
                                                         first token of PredictionString

Keys are file stems (`n01440764_10026`, `ILSVRC2012_val_00000001`); they must be unique within a split
and free of dots (webdataset splits a member name at its first dot).

Shards: the images are ordered by SHA-256 of their key (a fixed, filesystem-independent order that
mixes the classes) and cut into `data.{split}_shards` contiguous blocks. Plain key order would put
~one class in each ImageNet train shard and leave the shuffle buffer with a handful of classes at a
time. Within a shard, rows are in key order.

The index is a TSV with columns key, path (absolute), cls, wnid, shard.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semtok import paths
from semtok.config import Config
from semtok.data.images import IMAGE_SUFFIXES

COLUMNS = ("key", "path", "cls", "wnid", "shard")


@dataclass(frozen=True)
class IndexRow:
    key: str
    path: str
    cls: int
    wnid: str
    shard: int = -1


class DatasetError(ValueError):
    """The dataset folder cannot be indexed; the message names the path and the problem."""


def dataset_root(cfg: Config) -> Path:
    if cfg.data.source == "synthetic":
        return paths.synthetic_root(cfg.out)
    if not cfg.data.imagenet_root:
        raise DatasetError("data.imagenet_root: required when data.source is 'imagenet'")
    return Path(cfg.data.imagenet_root)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}")


def synsets(root: Path) -> list[str]:
    """Sorted train synset folders: position = class index."""
    train = root / "train"
    _require_dir(train, "train folder (its synset folders define the class indices)")
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir())
    if not wnids:
        raise DatasetError(f"no synset folders in {train}")
    return wnids


def _images_in(folder: Path, ignored: list[str]) -> list[Path]:
    """Image files of `folder` (scandir: no stat per file, which matters for 1.28M files on a cluster FS)."""
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                files.append(Path(entry.path))
            else:
                ignored.append(entry.path)
    return sorted(files)


def _per_class(folder: Path, wnids: list[str], ignored: list[str]) -> list[IndexRow]:
    classes = {w: i for i, w in enumerate(wnids)}
    rows = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in classes:
            raise DatasetError(f"{sub}: synset {sub.name!r} is not among the {len(wnids)} train synsets")
        rows += [
            IndexRow(f.stem, os.path.abspath(f), classes[sub.name], sub.name)
            for f in _images_in(sub, ignored)
        ]
    return rows


def read_val_solution(csv_path: Path) -> dict[str, str]:
    """LOC_val_solution.csv → {ImageId: wnid} (first token of PredictionString)."""
    if not csv_path.is_file():
        raise DatasetError(
            f"flat val folder needs its labels, but {csv_path} does not exist (data.val_solution_csv)"
        )
    labels = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise DatasetError(
                f"{csv_path}: expected columns ImageId, PredictionString; got {reader.fieldnames}"
            )
        for line, rec in enumerate(reader, start=2):
            tokens = (rec["PredictionString"] or "").split()
            if not tokens:
                raise DatasetError(f"{csv_path}:{line}: empty PredictionString for {rec['ImageId']}")
            labels[rec["ImageId"]] = tokens[0]
    return labels


def _flat_val(folder: Path, csv_path: Path, wnids: list[str], ignored: list[str]) -> list[IndexRow]:
    classes = {w: i for i, w in enumerate(wnids)}
    labels = read_val_solution(csv_path)
    files = _images_in(folder, ignored)
    unlabelled = [str(f) for f in files if f.stem not in labels]
    if unlabelled:
        raise DatasetError(f"{len(unlabelled)} val images have no label in {csv_path}, e.g. {unlabelled[:3]}")
    missing = sorted(set(labels) - {f.stem for f in files})
    if missing:
        raise DatasetError(
            f"{len(missing)} images labelled in {csv_path} are missing from {folder}, e.g. {missing[:3]}"
        )
    unknown = sorted({labels[f.stem] for f in files} - set(classes))
    if unknown:
        raise DatasetError(f"{csv_path}: synsets not among the train synsets: {unknown[:5]}")
    return [IndexRow(f.stem, os.path.abspath(f), classes[labels[f.stem]], labels[f.stem]) for f in files]


def list_split(cfg: Config, split: str) -> tuple[list[IndexRow], list[str]]:
    """All images of `split` (unsharded, key order) and the files that were not images."""
    root = dataset_root(cfg)
    _require_dir(root, "dataset root")
    wnids = synsets(root)
    folder = root / split
    _require_dir(folder, f"{split} folder")
    ignored: list[str] = []
    has_dirs = any(p.is_dir() for p in folder.iterdir())
    if split == "val" and not has_dirs:
        csv_path = (
            Path(cfg.data.val_solution_csv) if cfg.data.val_solution_csv else root / "LOC_val_solution.csv"
        )
        rows = _flat_val(folder, csv_path, wnids, ignored)
    else:
        loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DatasetError(f"{folder} mixes class folders with loose images, e.g. {loose[0]}")
        rows = _per_class(folder, wnids, ignored)
    if not rows:
        raise DatasetError(f"no images found in {folder}")
    return sorted(rows, key=lambda r: r.key), ignored


def check_keys(rows: list[IndexRow]) -> None:
    """Keys must be unique and usable as webdataset keys (no dots, tabs or newlines)."""
    seen: dict[str, str] = {}
    duplicates = []
    for row in rows:
        if row.key in seen:
            duplicates.append(f"{row.key}: {seen[row.key]} and {row.path}")
        seen[row.key] = row.path
        if any(c in row.key for c in ".\t\n") or any(c in row.path for c in "\t\n"):
            raise DatasetError(f"{row.path}: key {row.key!r} (or its path) contains a dot, tab or newline")
    if duplicates:
        raise DatasetError(f"{len(duplicates)} duplicate image keys (file stems), e.g. {duplicates[:3]}")


def shard_order(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def assign_shards(rows: list[IndexRow], num_shards: int) -> list[IndexRow]:
    """Cut the SHA-256 order of keys into `num_shards` contiguous blocks; returns rows by (shard, key)."""
    n = len(rows)
    if num_shards < 1 or num_shards > n:
        raise DatasetError(f"cannot cut {n} images into {num_shards} shards (data.*_shards)")
    ordered = sorted(rows, key=lambda r: (shard_order(r.key), r.key))
    sharded = [IndexRow(r.key, r.path, r.cls, r.wnid, j * num_shards // n) for j, r in enumerate(ordered)]
    return sorted(sharded, key=lambda r: (r.shard, r.key))


def write_index(rows: list[IndexRow], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for r in rows:
            f.write(f"{r.key}\t{r.path}\t{r.cls}\t{r.wnid}\t{r.shard}\n")
    os.replace(tmp, output)


def read_index(path: Path) -> list[IndexRow]:
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header) != COLUMNS:
            raise DatasetError(f"{path}: expected columns {COLUMNS}, got {header}")
        rows = []
        for line in f:
            key, file, cls, wnid, shard = line.rstrip("\n").split("\t")
            rows.append(IndexRow(key, file, int(cls), wnid, int(shard)))
    return rows


def build_index(cfg: Config, split: str) -> tuple[list[IndexRow], list[str]]:
    """The sharded index of `split` and the ignored (non-image) files."""
    rows, ignored = list_split(cfg, split)
    check_keys(rows)
    num_shards = {"train": cfg.data.train_shards, "val": cfg.data.val_shards}[split]
    return assign_shards(rows, num_shards), ignored


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", required=True, choices=paths.SPLITS)
    parser.add_argument("--output", required=True, help="index TSV (key, path, cls, wnid, shard)")


def run(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    try:
        rows, ignored = build_index(cfg, args.split)
    except DatasetError as err:
        sys.exit(f"semtok index: {err}")
    write_index(rows, Path(args.output))
    if ignored:
        print(
            f"warning: ignored {len(ignored)} files that are not images, e.g. {ignored[:5]}", file=sys.stderr
        )
    return {
        "split": args.split,
        "images": len(rows),
        "classes": len({r.cls for r in rows}),
        "shards": rows[-1].shard + 1,
        "ignored": ignored,
    }
