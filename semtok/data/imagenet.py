"""The index of a split: an ImageNet-layout folder listed, every image assigned to a shard (SPEC §1).

Layouts accepted:
    ROOT/train/nXXXXXXXX/*.JPEG                          (always; its synsets are the classes 0..N-1)
    ROOT/val/nXXXXXXXX/*.JPEG                            per-class val folder, or
    ROOT/val/*.JPEG + ROOT/LOC_val_solution.csv          the flat val folder; the CSV (ImageId,
                                                         PredictionString) gives each image's synset as the
                                                         first token of PredictionString

Classes: the synsets of ROOT/LOC_synset_mapping.txt in its order when the file exists (its folders
must then match it exactly), else the sorted folders of train/. Entries whose name starts with a dot
(`.ipynb_checkpoints`, `.DS_Store`) are never classes or images. A train class folder without images,
or train/ mixing synset folders (nXXXXXXXX) with other folders, is refused: either would shift labels.
The classes come from train/ for both splits, so the check is made before either split is listed
(`synsets`): a val index can never count a class that the train index refuses. A val class folder may
be empty.
`num_classes` reads the class count from the train index; every job that needs it asks there.

Everything found that is not an image to shard (hidden entries, files outside class folders, non-image
files, dangling symlinks, folders inside class folders) is an index row with its `rejected` reason; the
shard job lists it among the shard manifest's rejected files, so nothing disappears without a trace.

Keys are file stems with every byte outside `KEY_SAFE` written as %XX (`n01440764_10026` stays as it
is; `a.b c.JPEG` becomes `a%2Eb%20c`): unique, reversible, ASCII, and free of the dots webdataset
splits member names at. They must be unique within a split.

Shards: the images are ordered by SHA-256 of their key (a fixed, filesystem-independent order that
mixes the classes) and cut into `data.{split}_shards` contiguous blocks. Plain key order would put
~one class in each ImageNet train shard and leave the shuffle buffer with a handful of classes at a
time. Within a shard, rows are in key order. Rejected entries go to the shard their path hashes to.

The index is a TSV (csv quoting) with columns key, path (absolute), cls, wnid, shard, rejected.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from semtok import paths
from semtok.config import Config
from semtok.data.images import IMAGE_SUFFIXES

COLUMNS = ("key", "path", "cls", "wnid", "shard", "rejected")
SYNSET_MAPPING = "LOC_synset_mapping.txt"
WNID = re.compile(r"n\d{8}")
KEY_SAFE = frozenset(string.ascii_letters + string.digits + "-_+,=@~()[]!")
_ALL_SAFE = re.compile("[" + re.escape("".join(sorted(KEY_SAFE))) + "]*")
_TSV = {"delimiter": "\t", "lineterminator": "\n", "quoting": csv.QUOTE_MINIMAL}


@dataclass(frozen=True)
class IndexRow:
    key: str
    path: str
    cls: int  # -1: outside any class folder
    wnid: str
    shard: int = -1
    rejected: str = ""  # why this entry is not an image to shard; "" for an image


class DatasetError(ValueError):
    """The dataset folder cannot be indexed; the message names the path and the problem."""


def dataset_root(cfg: Config) -> Path:
    if cfg.data.source == "synthetic":
        return paths.synthetic_root(cfg.out)
    if not cfg.data.imagenet_root:
        raise DatasetError("data.imagenet_root: required when data.source is 'imagenet'")
    return Path(cfg.data.imagenet_root)


def file_key(name: str) -> str:
    """The webdataset key of file `name`: its stem, every byte outside KEY_SAFE written as %XX."""
    stem = Path(name).stem
    if _ALL_SAFE.fullmatch(stem):
        return stem
    return "".join(chr(b) if chr(b) in KEY_SAFE else f"%{b:02X}" for b in os.fsencode(stem))


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}")


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of `folder` by name (scandir: no stat per file, which matters for 1.28M files)."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as err:
        raise DatasetError(f"cannot list {folder}: {err}") from None


def _hidden(entry: os.DirEntry) -> bool:
    return entry.name.startswith(".")


def _rejection(entry: os.DirEntry, in_class_folder: bool) -> str:
    """Why `entry` is not an image to shard ("" if it is one)."""
    if _hidden(entry):
        return "hidden entry"
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "dangling symlink"
    if entry.is_dir():
        return "folder inside a class folder (not searched)" if in_class_folder else ""
    if not in_class_folder:
        return "file outside a class folder"
    if not entry.is_file():
        return "not a regular file"
    if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image file"
    return ""


def _row(entry: os.DirEntry, cls: int, wnid: str, rejected: str = "") -> IndexRow:
    return IndexRow(file_key(entry.name), os.path.abspath(entry.path), cls, wnid, rejected=rejected)


def read_synset_mapping(path: Path) -> list[str]:
    """LOC_synset_mapping.txt (`nXXXXXXXX description` per line) → wnids in class-index order."""
    wnids = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        if line.strip():
            wnid = line.split()[0]
            if not WNID.fullmatch(wnid):
                raise DatasetError(f"{path}:{number}: {wnid!r} is not a synset id (nXXXXXXXX)")
            wnids.append(wnid)
    duplicates = sorted(w for w, n in Counter(wnids).items() if n > 1)
    if duplicates:
        raise DatasetError(f"{path}: synsets listed twice: {duplicates[:5]}")
    if not wnids:
        raise DatasetError(f"{path}: no synsets")
    return wnids


def _has_image(folder: Path) -> bool:
    """Whether `folder` holds an image to shard (stops at the first one found)."""
    try:
        with os.scandir(folder) as it:
            return any(not _rejection(e, in_class_folder=True) for e in it)
    except OSError as err:
        raise DatasetError(f"cannot list {folder}: {err}") from None


def synsets(root: Path) -> list[str]:
    """The class synsets in class-index order: LOC_synset_mapping.txt's, else the sorted train folders.
    Every one must have a train folder with at least one image (DatasetError naming the first that has
    none), checked here so that no split is indexed with a class that the train split refuses."""
    train = root / "train"
    _require_dir(train, "train folder (its synset folders define the class indices)")
    wnids = _train_synsets(root, train)
    for cls, wnid in enumerate(wnids):
        if not _has_image(train / wnid):
            raise DatasetError(
                f"class folder {train / wnid} has no images (class {cls}); remove it or add images (the "
                "classes of both splits are the train folders: no split is indexed until then)"
            )
    return wnids


def _train_synsets(root: Path, train: Path) -> list[str]:
    folders = [e.name for e in _entries(train) if not _hidden(e) and e.is_dir()]
    mapping = root / SYNSET_MAPPING
    if mapping.is_file():
        wnids = read_synset_mapping(mapping)
        found = set(folders)
        extra, missing = sorted(found - set(wnids)), [w for w in wnids if w not in found]
        if extra:
            raise DatasetError(f"{train}: folders {extra[:5]} are not listed in {mapping}")
        if missing:
            raise DatasetError(
                f"{len(missing)} synsets of {mapping} have no folder in {train}: {missing[:5]}"
            )
        return wnids
    if not folders:
        raise DatasetError(f"no synset folders in {train}")
    odd = [f for f in folders if not WNID.fullmatch(f)]
    if odd and len(odd) < len(folders):
        raise DatasetError(
            f"{train} mixes synset folders (nXXXXXXXX) with other folders {odd[:5]}, which would become "
            f"classes and shift the labels; remove them or add {mapping}"
        )
    return folders


def _class_folder(folder: Path, cls: int, wnid: str) -> list[IndexRow]:
    return [_row(e, cls, wnid, _rejection(e, in_class_folder=True)) for e in _entries(folder)]


def _per_class(folder: Path, wnids: list[str]) -> list[IndexRow]:
    classes = {w: i for i, w in enumerate(wnids)}
    rows = []
    for entry in _entries(folder):
        reason = _rejection(entry, in_class_folder=False)
        if reason:
            rows.append(_row(entry, -1, "", reason))
            continue
        if entry.name not in classes:
            raise DatasetError(
                f"{entry.path}: synset {entry.name!r} is not among the {len(wnids)} train synsets"
            )
        cls = classes[entry.name]
        rows += _class_folder(Path(entry.path), cls, entry.name)
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


def _flat_val(folder: Path, csv_path: Path, wnids: list[str]) -> list[IndexRow]:
    classes = {w: i for i, w in enumerate(wnids)}
    labels = read_val_solution(csv_path)
    entries = [e for e in _entries(folder) if not _hidden(e)]
    missing = sorted(set(labels) - {Path(e.name).stem for e in entries})
    if missing:
        raise DatasetError(
            f"{len(missing)} images labelled in {csv_path} are missing from {folder}, e.g. {missing[:3]}"
        )
    rows = [_row(e, -1, "", "hidden entry") for e in _entries(folder) if _hidden(e)]
    unlabelled, unknown = [], set()
    for entry in entries:
        reason = _rejection(entry, in_class_folder=True)
        wnid = labels.get(Path(entry.name).stem, "")
        if not reason and not wnid:
            unlabelled.append(entry.path)
        elif wnid and wnid not in classes:
            unknown.add(wnid)
        else:
            rows.append(_row(entry, classes.get(wnid, -1), wnid, reason))
    if unlabelled:
        raise DatasetError(f"{len(unlabelled)} val images have no label in {csv_path}, e.g. {unlabelled[:3]}")
    if unknown:
        raise DatasetError(f"{csv_path}: synsets not among the train synsets: {sorted(unknown)[:5]}")
    return rows


def list_split(cfg: Config, split: str) -> list[IndexRow]:
    """Every entry of `split` (unsharded, key order): the images, and the rest with the reason."""
    root = dataset_root(cfg)
    _require_dir(root, "dataset root")
    wnids = synsets(root)
    folder = root / split
    _require_dir(folder, f"{split} folder")
    has_dirs = any(not _hidden(e) and e.is_dir() for e in _entries(folder))
    if split == "val" and not has_dirs:
        csv_path = (
            Path(cfg.data.val_solution_csv) if cfg.data.val_solution_csv else root / "LOC_val_solution.csv"
        )
        rows = _flat_val(folder, csv_path, wnids)
    else:
        rows = _per_class(folder, wnids)
    if all(r.rejected for r in rows):
        raise DatasetError(f"no images found in {folder}")
    return sorted(rows, key=lambda r: (r.key, r.path))


def check_keys(rows: list[IndexRow]) -> None:
    """Image keys must be unique within a split."""
    seen: dict[str, str] = {}
    duplicates = []
    for row in rows:
        if row.rejected:
            continue
        if row.key in seen:
            duplicates.append(f"{row.key}: {seen[row.key]} and {row.path}")
        seen[row.key] = row.path
    if duplicates:
        raise DatasetError(f"{len(duplicates)} duplicate image keys (file stems), e.g. {duplicates[:3]}")


def shard_order(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def assign_shards(rows: list[IndexRow], num_shards: int) -> list[IndexRow]:
    """Cut the SHA-256 order of image keys into `num_shards` contiguous blocks; a rejected entry goes to
    the shard its path hashes to. Returns rows by (shard, key, path)."""
    images = [r for r in rows if not r.rejected]
    n = len(images)
    if num_shards < 1 or num_shards > n:
        raise DatasetError(f"cannot cut {n} images into {num_shards} shards (data.*_shards)")
    ordered = sorted(images, key=lambda r: (shard_order(r.key), r.key))
    sharded = [replace(r, shard=j * num_shards // n) for j, r in enumerate(ordered)]
    sharded += [replace(r, shard=int(shard_order(r.path), 16) % num_shards) for r in rows if r.rejected]
    return sorted(sharded, key=lambda r: (r.shard, r.key, r.path))


def _open_tsv(path: Path, mode: str) -> Any:
    # surrogateescape: file names that are not valid UTF-8 round-trip byte for byte
    return open(path, mode, newline="", encoding="utf-8", errors="surrogateescape")


def write_index(rows: list[IndexRow], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with _open_tsv(tmp, "w") as f:
        writer = csv.writer(f, **_TSV)
        writer.writerow(COLUMNS)
        writer.writerows((r.key, r.path, r.cls, r.wnid, r.shard, r.rejected) for r in rows)
    os.replace(tmp, output)


def iter_index(path: Path) -> Iterator[IndexRow]:
    """The rows of an index TSV, one at a time; errors name the file and line."""
    with _open_tsv(path, "r") as f:
        reader = csv.reader(f, **_TSV)
        header = next(reader, [])
        if tuple(header) != COLUMNS:
            raise DatasetError(f"{path}: expected columns {COLUMNS}, got {header} (rebuild the index)")
        for fields in reader:
            try:
                key, file, cls, wnid, shard, rejected = fields
                yield IndexRow(key, file, int(cls), wnid, int(shard), rejected)
            except ValueError as err:
                raise DatasetError(f"{path}:{reader.line_num}: malformed index row ({err})") from None


def read_index(path: Path) -> list[IndexRow]:
    return list(iter_index(path))


def num_classes(cfg: Config) -> int:
    """The number of classes of the run's data: the class count of the train index (classes are
    0..N-1 and every class has at least one listed image). The generator's null class is N."""
    index = paths.index_file(cfg.out, "train")
    if not index.is_file():
        raise DatasetError(f"the class count comes from the train index, which does not exist: {index}")
    classes = {r.cls for r in iter_index(index) if not r.rejected}
    if classes != set(range(len(classes))):
        raise DatasetError(f"{index}: classes are not 0..N-1 (rebuild the index)")
    return len(classes)


def read_class_descriptions(path: Path) -> dict[str, str]:
    """LOC_synset_mapping.txt → {wnid: description} ("n01440764 tench, Tinca tinca" → "tench, Tinca tinca")."""
    out = {}
    for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        wnid, _, description = line.strip().partition(" ")
        if wnid:
            out[wnid] = description.strip()
    return out


def class_names(cfg: Config) -> list[str]:
    """The name of every class by index (the train index's classes): the description of its synset in
    the dataset's LOC_synset_mapping.txt when the file has one (the synthetic data writes one), else the
    synset id itself."""
    index = paths.index_file(cfg.out, "train")
    if not index.is_file():
        raise DatasetError(f"class names come from the train index, which does not exist: {index}")
    wnids = {r.cls: r.wnid for r in iter_index(index) if not r.rejected}
    if set(wnids) != set(range(len(wnids))):
        raise DatasetError(f"{index}: classes are not 0..N-1 (rebuild the index)")
    mapping = dataset_root(cfg) / SYNSET_MAPPING
    described = read_class_descriptions(mapping) if mapping.is_file() else {}
    return [described.get(wnids[c]) or wnids[c] for c in range(len(wnids))]


def take_subset(rows: list[IndexRow], classes: int | None, per_class: int | None) -> list[IndexRow]:
    """`data.subset` of a split's rows (key order): the images and rejected entries of classes
    0..classes-1, at most `per_class` images of each (the first in key order); entries outside any class
    folder stay listed."""
    taken: Counter = Counter()
    kept = []
    for row in rows:
        if classes is not None and row.cls >= classes:
            continue
        if not row.rejected and row.cls >= 0 and per_class is not None:
            if taken[row.cls] >= per_class:
                continue
            taken[row.cls] += 1
        kept.append(row)
    return kept


def build_index(cfg: Config, split: str) -> tuple[list[IndexRow], list[IndexRow]]:
    """The sharded index of `split` (images and rejected entries, `data.subset` of them) and its
    rejected entries."""
    subset = cfg.data.subset
    rows = take_subset(list_split(cfg, split), subset.classes, getattr(subset, f"{split}_per_class"))
    check_keys(rows)
    num_shards = {"train": cfg.data.train_shards, "val": cfg.data.val_shards}[split]
    rows = assign_shards(rows, num_shards)
    return rows, [r for r in rows if r.rejected]
