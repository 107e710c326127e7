import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from semtok import paths
from semtok.cli import main as cli
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
    assert (tmp_path / "val.tsv").read_text().splitlines()[0] == "key\tpath\tcls\twnid\tshard\trejected"


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
    rows, rejected = imagenet.build_index(cfg, "train")
    assert len([r for r in rows if not r.rejected]) == 24
    assert [(r.path, r.cls, r.rejected) for r in rejected] == [
        (str(dataset / "train" / "n00000002" / "notes.txt"), 2, "not an image file")
    ]


def test_cli_writes_the_index_and_fails_clearly(cfg, dataset, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    output = tmp_path / "train.tsv"
    assert cli.main(["index", "--config", str(config), "--split", "train", "--output", str(output)]) == 0
    assert len(imagenet.read_index(output)) == 24
    elsewhere = ["--set", f"out_dir={tmp_path / 'x'}"]
    with pytest.raises(SystemExit, match="dataset root not found: .*/x/data/synthetic"):
        cli.main(["index", "--config", str(config), *elsewhere, "--split", "train", "--output", str(output)])


# ---------------------------------------------------------------------------------------------
# ImageNet trees as they really are


def _labels(rows):
    return {r.key: (r.cls, r.wnid) for r in rows if not r.rejected}


def test_hidden_entries_never_become_classes_or_images(cfg, dataset):
    before = _labels(imagenet.build_index(cfg, "train")[0])
    checkpoints = dataset / "train" / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shutil.copy(next((dataset / "train" / "n00000000").iterdir()), checkpoints / "copy.JPEG")
    (dataset / "train" / ".DS_Store").write_bytes(b"\0")
    (dataset / "train" / "n00000001" / "._n00000001_0.JPEG").write_bytes(b"\0")
    for mapping in (True, False):
        if not mapping:
            (dataset / imagenet.SYNSET_MAPPING).unlink()
        rows, rejected = imagenet.build_index(cfg, "train")
        assert _labels(rows) == before  # no label shifted
        assert {(Path(r.path).name, r.rejected) for r in rejected} == {
            (".ipynb_checkpoints", "hidden entry"),
            (".DS_Store", "hidden entry"),
            ("._n00000001_0.JPEG", "hidden entry"),
        }


def test_classes_follow_the_synset_mapping_file_and_must_match_the_folders(cfg, dataset):
    mapping = dataset / imagenet.SYNSET_MAPPING
    wnids = [line.split()[0] for line in mapping.read_text().splitlines()]
    mapping.write_text("\ufeff" + "".join(f"{w} class {w}\n" for w in reversed(wnids)))  # with a BOM
    rows, _ = imagenet.build_index(cfg, "train")
    assert all(r.cls == 3 - int(r.wnid[1:]) for r in rows)
    assert imagenet.build_index(cfg, "val")[0][0].cls == 3 - int(
        imagenet.build_index(cfg, "val")[0][0].wnid[1:]
    )
    (dataset / "train" / "n00000009").mkdir()
    with pytest.raises(
        DatasetError, match=r"folders \['n00000009'\] are not listed in .*LOC_synset_mapping.txt"
    ):
        imagenet.build_index(cfg, "train")
    (dataset / "train" / "n00000009").rmdir()
    mapping.write_text(mapping.read_text() + "n00000042 a synset without images\n")
    with pytest.raises(
        DatasetError, match=r"1 synsets of .*LOC_synset_mapping.txt have no folder.*n00000042"
    ):
        imagenet.build_index(cfg, "train")
    mapping.write_text("n00000000 x\nn00000000 y\n")
    with pytest.raises(DatasetError, match="listed twice"):
        imagenet.build_index(cfg, "train")


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("content", [None, "readme.txt"], ids=["empty", "no image"])
def test_a_train_class_folder_without_images_stops_both_splits(cfg, dataset, split, content):
    """The classes of both splits are the train folders: an empty (or image-less) train class folder
    would take a class index (sorted first, it shifts every label), so the val index refuses it too,
    before listing anything (it used to finish with the folder counted as a class); once it is
    removed, both splits agree."""
    (dataset / imagenet.SYNSET_MAPPING).unlink()
    folder = dataset / "train" / "n00000009"
    folder.mkdir()
    if content:
        (folder / content).write_text("no images here")
    with pytest.raises(DatasetError, match=r"class folder .*n00000009 has no images \(class 4\)"):
        imagenet.build_index(cfg, split)
    shutil.rmtree(folder)
    rows = {s: imagenet.build_index(cfg, s)[0] for s in ("train", "val")}
    classes = [{r.wnid: r.cls for r in rows[s] if not r.rejected} for s in ("train", "val")]
    assert classes[0] == classes[1] == {f"n0000000{i}": i for i in range(4)}


def test_an_empty_val_class_folder_is_allowed(cfg, dataset):
    for image in (dataset / "val" / "n00000002").iterdir():
        image.unlink()
    rows, _ = imagenet.build_index(cfg, "val")
    assert {r.cls for r in rows if not r.rejected} == {0, 1, 3}


def test_a_stray_folder_among_synsets_is_refused_not_made_a_class(cfg, dataset):
    (dataset / imagenet.SYNSET_MAPPING).unlink()
    stray = dataset / "train" / "backup"
    stray.mkdir()
    shutil.copy(next((dataset / "train" / "n00000000").iterdir()), stray / "x.JPEG")
    with pytest.raises(DatasetError, match=r"mixes synset folders .* \['backup'\]"):
        imagenet.build_index(cfg, "train")


def test_dangling_symlinks_loose_files_and_odd_entries_are_listed_as_rejected(cfg, dataset):
    train = dataset / "train"
    (train / "n00000001" / "gone.JPEG").symlink_to(train / "nowhere.JPEG")
    (train / "loose.JPEG").write_bytes((train / "n00000000" / "n00000000_0.JPEG").read_bytes())
    (train / "README.txt").write_text("x")
    (train / "n00000002" / "nested.JPEG").mkdir()
    os.mkfifo(train / "n00000003" / "pipe.JPEG")  # reading it would block the shard job forever
    rows, rejected = imagenet.build_index(cfg, "train")
    assert len([r for r in rows if not r.rejected]) == 24
    assert {(Path(r.path).name, r.cls, r.rejected) for r in rejected} == {
        ("gone.JPEG", 1, "dangling symlink"),
        ("loose.JPEG", -1, "file outside a class folder"),
        ("README.txt", -1, "file outside a class folder"),
        ("nested.JPEG", 2, "folder inside a class folder (not searched)"),
        ("pipe.JPEG", 3, "not a regular file"),
    }
    assert all(0 <= r.shard < 2 for r in rows)


def test_keys_of_odd_file_names_are_unique_ascii_without_dots_and_the_tsv_round_trips(cfg, dataset, tmp_path):
    folder = dataset / "train" / "n00000001"
    image = (folder / "n00000001_0.JPEG").read_bytes()
    names = [
        "a.b c.JPEG",
        "a%2Eb c.JPEG",  # what "a.b c" would become if '%' were not itself encoded
        "tab\there.jpeg",
        "new\nline.JPEG",
        "ünïcødé-" + "x" * 120 + ".JPEG",
    ]
    for name in names:
        (folder / name).write_bytes(image)
    raw_name = b"latin1-caf\xe9.JPEG"  # not valid UTF-8, as found on old file systems
    with open(os.path.join(os.fsencode(folder), raw_name), "wb") as f:
        f.write(image)
    rows, _ = imagenet.build_index(cfg, "train")
    keys = {Path(r.path).name: r.key for r in rows if r.cls == 1}
    assert keys["a.b c.JPEG"] == "a%2Eb%20c" and keys["a%2Eb c.JPEG"] == "a%252Eb%20c"
    assert keys[os.fsdecode(raw_name)] == "latin1-caf%E9"
    assert all(k.isascii() and "." not in k for k in keys.values()) and len(set(keys.values())) == len(keys)
    imagenet.write_index(rows, tmp_path / "train.tsv")
    assert imagenet.read_index(tmp_path / "train.tsv") == rows


def test_num_classes_comes_from_the_train_index(tmp_path, dataset, make_cfg, monkeypatch):
    from semtok.models import factory
    from semtok.train import teachers

    root = tmp_path / "imagenet"
    image = (dataset / "train" / "n00000000" / "n00000000_0.JPEG").read_bytes()
    for wnid in ("n01440764", "n01443537", "n01484850"):
        (root / "train" / wnid).mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_1.JPEG").write_bytes(image)
    cfg = make_cfg(["data.source=imagenet", f"data.imagenet_root={root}"], tmp_path / "run")
    with pytest.raises(DatasetError, match="train index, which does not exist"):
        imagenet.num_classes(cfg)
    imagenet.write_index(imagenet.build_index(cfg, "train")[0], paths.index_file(cfg.out, "train"))
    assert imagenet.num_classes(cfg) == 3
    # the generator (its null class is num_classes) and the bootstrapped teachers size their classes by it
    monkeypatch.setattr(factory, "tokenizer_shape", lambda cfg, variant: (16, 18))
    assert factory.generator_kwargs(cfg, "ar-l")["num_classes"] == 3
    assert teachers.build_teacher(cfg, "siglip")[0].head.out_features == 3


def test_class_names_are_the_synset_descriptions_in_class_order(tmp_path, dataset, make_cfg):
    cfg = make_cfg(["data.source=imagenet", f"data.imagenet_root={dataset}"], tmp_path / "run")
    with pytest.raises(DatasetError, match="train index, which does not exist"):
        imagenet.class_names(cfg)
    mapping = dataset / imagenet.SYNSET_MAPPING
    wnids = [line.split()[0] for line in mapping.read_text().splitlines()]
    mapping.write_text("".join(f"{w} name of {w}, alias\n" for w in reversed(wnids)))
    imagenet.write_index(imagenet.build_index(cfg, "train")[0], paths.index_file(cfg.out, "train"))
    assert imagenet.class_names(cfg) == [f"name of {w}, alias" for w in reversed(wnids)]
    mapping.unlink()  # no descriptions: the synset ids, in the sorted-folder order of the index
    imagenet.write_index(imagenet.build_index(cfg, "train")[0], paths.index_file(cfg.out, "train"))
    assert imagenet.class_names(cfg) == sorted(wnids)


def test_a_subset_takes_the_first_classes_and_images_of_each_split(make_cfg, tmp_path):
    cfg = make_cfg(["data.subset={classes: 3, train_per_class: 2, val_per_class: 1}"])
    synthetic.write_dataset(cfg.data.synthetic, paths.synthetic_root(cfg.out))
    (paths.synthetic_root(cfg.out) / "train" / "loose.txt").write_text("not in a class folder")
    for split, per_class in (("train", 2), ("val", 1)):
        rows, rejected = imagenet.build_index(cfg, split)
        images = [r for r in rows if not r.rejected]
        assert Counter(r.cls for r in images) == {0: per_class, 1: per_class, 2: per_class}
        every = imagenet.take_subset(imagenet.list_split(cfg, split), None, None)
        first = {
            c: sorted(r.key for r in every if r.cls == c and not r.rejected)[:per_class] for c in range(3)
        }
        assert {c: sorted(r.key for r in images if r.cls == c) for c in range(3)} == first
        assert [r.rejected for r in rejected] == (["file outside a class folder"] if split == "train" else [])
    imagenet.write_index(imagenet.build_index(cfg, "train")[0], paths.index_file(cfg.out, "train"))
    assert imagenet.num_classes(cfg) == 3
