"""The data summary: the per-shard manifests merged into the data manifest and a small table.

The data manifest (JSON) holds, per split: images written, shards, per-class counts, and every
converted and rejected file with its reason; plus the totals of each reason. The table (CSV and
Markdown) has one row per split: split, images, classes, converted, rejected, shards.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

TABLE_COLUMNS = ("split", "images", "classes", "converted", "rejected", "shards")


def merge_manifests(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-shard manifests → {"splits": {split: {...}}, "converted": [...], "rejected": [...], "reasons": {...}}."""
    splits: dict[str, dict[str, Any]] = {}
    converted, rejected = [], []
    for m in sorted(manifests, key=lambda m: (m["split"], m["index"])):
        split = splits.setdefault(
            m["split"],
            {"images": 0, "listed": 0, "converted": 0, "rejected": 0, "shards": 0, "classes": Counter()},
        )
        split["shards"] += 1
        for field in ("listed", "converted", "rejected"):
            split[field] += m["counts"][field]
        split["images"] += m["counts"]["written"]
        split["classes"].update({int(c): n for c, n in m["classes"].items()})
        converted += [{"split": m["split"], **rec} for rec in m["converted"]]
        rejected += [{"split": m["split"], **rec} for rec in m["rejected"]]
    for split in splits.values():
        split["classes"] = {str(c): split["classes"][c] for c in sorted(split["classes"])}
    reasons = {
        "converted": dict(Counter(r for rec in converted for r in rec["reasons"])),
        "rejected": dict(Counter(rec["reason"] for rec in rejected)),
    }
    return {"splits": splits, "reasons": reasons, "converted": converted, "rejected": rejected}


def table_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "split": name,
            "images": s["images"],
            "classes": len(s["classes"]),
            "converted": s["converted"],
            "rejected": s["rejected"],
            "shards": s["shards"],
        }
        for name, s in summary["splits"].items()
    ]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in TABLE_COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def read_manifest(path: Path) -> dict[str, Any]:
    """One shard manifest; an unreadable or incomplete one raises ValueError naming the file."""
    try:
        manifest = json.loads(path.read_text())
        missing = {"split", "index", "counts", "classes", "converted", "rejected"} - set(manifest)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a shard manifest ({type(err).__name__}: {err})") from None
    if missing:
        raise ValueError(f"{path}: not a shard manifest (no {sorted(missing)}); rerun its shard job")
    return manifest
