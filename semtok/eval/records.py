"""Tidy metric CSVs: one row per (run, variant, setting, metric), with how the number was made.

Columns: run_id, kind, variant, setting, metric, value, protocol, config_hash, n_samples, created.
Tables and notebooks read only these files.
"""

from __future__ import annotations

import csv
import datetime
import math
from pathlib import Path
from typing import Any

from semtok.data.shards import atomic_path

COLUMNS = (
    "run_id",
    "kind",
    "variant",
    "setting",
    "metric",
    "value",
    "protocol",
    "config_hash",
    "n_samples",
    "created",
)


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically; every row needs every column but `created`; values must be finite."""
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for row in rows:
        missing = [c for c in COLUMNS if c != "created" and c not in row]
        if missing:
            raise ValueError(f"metric row lacks {missing}: {row}")
        if not math.isfinite(float(row["value"])):
            raise ValueError(f"metric {row['metric']} of {row['variant']} is not finite: {row['value']}")
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "created": created})
