"""Tidy metric CSVs: one row per (run, variant, setting, metric), with how the number was made.

Columns: run_id, kind, variant, setting, metric, value, protocol, config_hash, n_samples, created.
Tables and notebooks read only these files.
"""

from __future__ import annotations

import csv
import datetime
import math
from pathlib import Path

from semtok.utils.io import atomic_path

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


def write_metrics(
    path: Path,
    *,
    run_id: str,
    kind: str,
    variant: str,
    setting: str,
    values: dict[str, float],
    protocols: dict[str, str],
    config_hash: str,
    n_samples: int,
) -> None:
    """Write one row per metric of `values` (each with its protocol), atomically; values must be finite."""
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for metric, value in values.items():
        if not math.isfinite(float(value)):
            raise ValueError(f"metric {metric} of {variant} is not finite: {value}")
        if metric not in protocols:
            raise ValueError(f"metric {metric} of {variant} has no protocol")
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for metric, value in values.items():
            writer.writerow(
                {
                    "run_id": run_id,
                    "kind": kind,
                    "variant": variant,
                    "setting": setting,
                    "metric": metric,
                    "value": value,
                    "protocol": protocols[metric],
                    "config_hash": config_hash,
                    "n_samples": n_samples,
                    "created": created,
                }
            )
