import shutil
from collections import Counter

import pytest
import yaml

from semtok import cli, paths
from semtok.config import to_dict
from semtok.data import imagenet, synthetic
from semtok.data.imagenet import DatasetError


@pytest.fixture
def dataset(cfg):
    synthetic.write_dataset(cfg.data.synthetic, paths.synthetic_root(cfg.out))
    return paths.synthetic_root(cfg.out)


def _flatten_val(root, csv_path):
    """Turn val/<wnid>/*.JPEG into the flat val folder and its LOC_val_solution.csv."""
    lines = ["ImageId,PredictionString"]
    for image in sorted((root / "val").rglob("*.JPEG")):
        lines.append(f"{image.stem},{image.parent.name} 1 2 30 40 {image.parent.name} 5 6 7 8")
        image.rename(root / "val" / image.name)
    for folder in [p for p in (root / "val").iterdir() if p.is_dir()]:
        folder.rmdir()
    csv_path.write_text("\n".join(lines) + "\n")


def test_per_class_index_lists_every_image_once_with_its_class(cfg, dataset):
    rows, ignored = imagenet.build_index(cfg, "train")
    assert not ignored
    files = sorted(str(p) for p in (dataset / "train").rglob("*.JPEG"))
    assert sorted(r.path for r in rows) == files
    assert all(r.path.startswith("/") for r in rows)
    assert len({r.key for r in rows}) == len(rows)
    assert all(r.wnid == f"n{r.cls:08d}" and r.key.startswith(r.wnid) for r in rows)
    # contiguous blocks of the hash order, balanced, rows sorted by (shard, key)
    assert sorted(Counter(r.shard for r in rows).values()) == [12, 12]
    assert rows == sorted(rows, key=lambda r: (r.shard, r.key))
    order = sorted(rows, key=lambda r: imagenet.shard_order(r.key))
    assert [r.shard for r in order] == sorted(r.shard for r in order)


def test_index_is_deterministic_and_round_trips_through_tsv(cfg, dataset, tmp_path):
    rows, _ = imagenet.build_index(cfg, "val")
    imagenet.write_index(rows, tmp_path / "val.tsv")
    assert imagenet.read_index(tmp_path / "val.tsv") == rows
    assert imagenet.build_index(cfg, "val")[0] == rows
    assert (tmp_path / "val.tsv").read_text().splitlines()[0] == "key\tpath\tcls\twnid\tshard"


def test_flat_val_folder_with_solution_csv_matches_per_class_layout(cfg, dataset):
    per_class, _ = imagenet.build_index(cfg, "val")
    _flatten_val(dataset, dataset / "LOC_val_solution.csv")
    flat, _ = imagenet.build_index(cfg, "val")
    assert [(r.key, r.cls, r.wnid, r.shard) for r in flat] == [
        (r.key, r.cls, r.wnid, r.shard) for r in per_class
    ]
    assert all(r.path.endswith(f"/val/{r.key}.JPEG") for r in flat)


def test_flat_val_csv_path_from_config(tmp_path, make_cfg):
    elsewhere = tmp_path / "labels" / "solution.csv"
    elsewhere.parent.mkdir()
    cfg = make_cfg([f"data.val_solution_csv={elsewhere}"])
    root = paths.synthetic_root(cfg.out)
    synthetic.write_dataset(cfg.data.synthetic, root)
    _flatten_val(root, elsewhere)
    rows, _ = imagenet.build_index(cfg, "val")
    assert len(rows) == 12
    elsewhere.unlink()
    with pytest.raises(DatasetError, match="solution.csv"):
        imagenet.build_index(cfg, "val")


def test_flat_val_with_unlabelled_image_fails(cfg, dataset):
    _flatten_val(dataset, dataset / "LOC_val_solution.csv")
    shutil.copy(next((dataset / "val").iterdir()), dataset / "val" / "ILSVRC2012_val_99999999.JPEG")
    with pytest.raises(DatasetError, match="no label"):
        imagenet.build_index(cfg, "val")


def test_imagenet_source_reads_imagenet_root(tmp_path, dataset, make_cfg):
    cfg = make_cfg(["data.source=imagenet", f"data.imagenet_root={dataset}"], tmp_path / "other")
    assert len(imagenet.build_index(cfg, "train")[0]) == 24


def test_missing_root_and_split_are_named(tmp_path, dataset, make_cfg):
    missing = tmp_path / "nowhere"
    cfg = make_cfg(["data.source=imagenet", f"data.imagenet_root={missing}"])
    with pytest.raises(DatasetError, match=str(missing)):
        imagenet.build_index(cfg, "train")
    shutil.rmtree(dataset / "val")
    cfg = make_cfg()
    with pytest.raises(DatasetError, match=str(dataset / "val")):
        imagenet.build_index(cfg, "val")


def test_duplicate_keys_fail_naming_both_files(cfg, dataset):
    first = next((dataset / "train" / "n00000000").iterdir())
    shutil.copy(first, dataset / "train" / "n00000001" / first.name)
    with pytest.raises(DatasetError, match="duplicate.*" + first.name.split(".")[0]):
        imagenet.build_index(cfg, "train")


def test_more_shards_than_images_fails(make_cfg):
    cfg = make_cfg(["data.val_shards=13"])
    synthetic.write_dataset(cfg.data.synthetic, paths.synthetic_root(cfg.out))
    with pytest.raises(DatasetError, match="12 images into 13 shards"):
        imagenet.build_index(cfg, "val")


def test_non_image_files_are_reported(cfg, dataset):
    (dataset / "train" / "n00000002" / "notes.txt").write_text("x")
    rows, ignored = imagenet.build_index(cfg, "train")
    assert len(rows) == 24
    assert ignored == [str(dataset / "train" / "n00000002" / "notes.txt")]


def test_cli_writes_the_index_and_fails_clearly(cfg, dataset, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    output = tmp_path / "train.tsv"
    assert cli.main(["index", "--config", str(config), "--split", "train", "--output", str(output)]) == 0
    assert len(imagenet.read_index(output)) == 24
    elsewhere = ["--set", f"out_dir={tmp_path / 'x'}"]
    with pytest.raises(SystemExit, match="dataset root not found: .*/x/data/synthetic"):
        cli.main(["index", "--config", str(config), *elsewhere, "--split", "train", "--output", str(output)])
