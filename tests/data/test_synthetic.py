import itertools
from pathlib import Path

from PIL import Image

from semtok.config import SyntheticConfig
from semtok.data import synthetic

SMALL = SyntheticConfig(num_classes=5, train_per_class=3, val_per_class=2, min_size=40, max_size=70, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    synthetic.write_dataset(SMALL, tmp_path / "a")
    synthetic.write_dataset(SMALL, tmp_path / "b")
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": 4})
    synthetic.write_dataset(other, tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys()
    images = [name for name in a if name.endswith(".JPEG")]
    assert all(a[name] != c[name] for name in images)


def test_imagenet_layout_counts_and_sizes(tmp_path):
    root = tmp_path / "ds"
    synthetic.write_dataset(SMALL, root)
    wnids = [f"n{c:08d}" for c in range(5)]
    assert sorted(p.name for p in (root / "train").iterdir()) == wnids
    assert sorted(p.name for p in (root / "val").iterdir()) == wnids
    train = sorted((root / "train").rglob("*.JPEG"))
    val = sorted((root / "val").rglob("*.JPEG"))
    assert len(train) == 15 and len(val) == 10
    assert all(p.name.startswith(p.parent.name + "_") for p in train)
    val_numbers = sorted(int(p.stem.rsplit("_", 1)[1]) for p in val)
    assert val_numbers == list(range(1, 11))
    sizes = [Image.open(p).size for p in train + val]
    assert all(40 <= w <= 70 and 40 <= h <= 70 for w, h in sizes)
    assert any(w != h for w, h in sizes)
    assert all(Image.open(p).mode == "RGB" for p in train[:3])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_rewrite_replaces_the_folder(tmp_path):
    root = tmp_path / "ds"
    synthetic.write_dataset(SMALL, root)
    (root / "stale.txt").write_text("old")
    synthetic.write_dataset(SMALL, root)
    assert not (root / "stale.txt").exists()
    assert len(list(root.rglob("*.JPEG"))) == 25


def test_classes_are_distinct_combinations():
    for n in (10, 100, 1000):
        specs = synthetic.class_specs(n)
        assert len({(s.shape, s.texture, s.palette) for s in specs}) == n
        assert len({s.wnid for s in specs}) == n
    first = synthetic.class_specs(10)
    assert all(a.shape != b.shape and a.texture != b.texture for a, b in itertools.pairwise(first))
