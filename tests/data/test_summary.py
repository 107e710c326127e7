import csv
import json

import pytest
import yaml

from semtok.cli import main as cli
from semtok.config import to_dict
from semtok.data.summary import merge_manifests


def _manifest(split, index, classes, converted=(), rejected=()):
    written = sum(classes.values())
    return {
        "split": split,
        "index": index,
        "counts": {
            "listed": written + len(rejected),
            "written": written,
            "converted": len(converted),
            "rejected": len(rejected),
        },
        "classes": {str(c): n for c, n in classes.items()},
        "converted": [{"key": k, "path": f"/d/{k}.JPEG", "cls": 0, "reasons": r} for k, r in converted],
        "rejected": [
            {"key": k, "path": f"/d/{k}.JPEG", "cls": 1, "reason": r, "detail": ""} for k, r in rejected
        ],
    }


MANIFESTS = [
    _manifest("train", 1, {0: 3, 2: 4}, rejected=[("t1", "empty file")]),
    _manifest(
        "train",
        0,
        {0: 2, 1: 5},
        converted=[("g", ["mode L -> RGB"]), ("p", ["PNG data in a .JPEG file", "mode P -> RGB"])],
    ),
    _manifest("val", 0, {1: 2, 2: 1}, rejected=[("v", "empty file"), ("w", "truncated image data")]),
]


def test_merge_counts_per_split_class_and_reason():
    summary = merge_manifests(MANIFESTS)
    train, val = summary["splits"]["train"], summary["splits"]["val"]
    assert train["images"] == 14 and train["shards"] == 2 and train["classes"] == {"0": 5, "1": 5, "2": 4}
    assert train["converted"] == 2 and train["rejected"] == 1 and train["listed"] == 15
    assert val["images"] == 3 and val["rejected"] == 2
    assert summary["reasons"]["rejected"] == {"empty file": 2, "truncated image data": 1}
    assert summary["reasons"]["converted"] == {
        "mode L -> RGB": 1,
        "PNG data in a .JPEG file": 1,
        "mode P -> RGB": 1,
    }
    assert [r["key"] for r in summary["converted"]] == ["g", "p"]
    assert {(r["split"], r["key"]) for r in summary["rejected"]} == {
        ("train", "t1"),
        ("val", "v"),
        ("val", "w"),
    }


def test_cli_writes_manifest_csv_and_markdown(cfg, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    inputs = []
    for i, m in enumerate(MANIFESTS):
        inputs.append(tmp_path / f"m{i}.json")
        inputs[-1].write_text(json.dumps(m))
    out, table, md = tmp_path / "manifest.json", tmp_path / "t.csv", tmp_path / "t.md"
    args = ["--manifests", *map(str, inputs), "--output", str(out), "--csv", str(table), "--md", str(md)]
    assert cli.main(["data-summary", "--config", str(config), *args]) == 0
    assert json.loads(out.read_text())["splits"]["val"]["images"] == 3
    rows = list(csv.DictReader(table.open()))
    assert rows == [
        {"split": "train", "images": "14", "classes": "3", "converted": "2", "rejected": "1", "shards": "2"},
        {"split": "val", "images": "3", "classes": "2", "converted": "0", "rejected": "2", "shards": "1"},
    ]
    lines = md.read_text().splitlines()
    assert lines[0] == "| split | images | classes | converted | rejected | shards |"
    assert lines[2] == "| train | 14 | 3 | 2 | 1 | 2 |"


def test_a_damaged_manifest_is_named(tmp_path, cfg):
    good, bad = tmp_path / "train-00000.json", tmp_path / "train-00001.json"
    good.write_text(json.dumps(MANIFESTS[0]))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    out = [
        "--output",
        str(tmp_path / "m.json"),
        "--csv",
        str(tmp_path / "t.csv"),
        "--md",
        str(tmp_path / "t.md"),
    ]
    for damage in ('{"split": "train", "ind', '{"split": "train"}', "[1, 2]"):
        bad.write_text(damage)
        with pytest.raises(SystemExit, match="train-00001.json: not a shard manifest"):
            cli.main(["data-summary", "--config", str(config), "--manifests", str(good), str(bad), *out])
