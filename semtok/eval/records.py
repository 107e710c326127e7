"""Tidy metric CSVs: one row per (run, variant, setting, metric), with how the number was made.

Columns: run_id, kind, variant, setting, metric, value, protocol, config_hash, n_samples, created.
Tables and notebooks read only these files.

A protocol is a space-separated list of `key=value` fields (values without spaces), e.g.
`fid=inception-v3-compat:6726825d ref=VIRTUAL_imagenet256_labeled.npz n=50000`: `fid` the feature
extractor (name:sha8 of its weights), `ref` the reference images or statistics, `n` the sample count,
`data` the images (`imagenet-val-256px`), `definition` a definition's name, `net` the LPIPS network,
`classifier` the class_acc classifier, `labels` what its predictions are scored against, `splits`,
`k`. The report compares these fields with the paper's protocol (semtok.report.protocols).

Besides the tokenizer and generator runs, two rows of `kind` recon hold references: variant
`original` (setting `val`, the validation images themselves: class_acc) and variant `vae` (setting
`frozen`, the frozen VAE alone: the reconstruction ceiling).
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

ORIGINAL = ("original", "val")  # (variant, setting) of the validation images' own row
VAE = ("vae", "frozen")  # (variant, setting) of the frozen VAE's reconstruction row
PSNR_DEFINITION = "uint8-rgb-per-image-mean"
SSIM_DEFINITION = "uint8-rgb-gaussian11-sigma1.5-per-image-mean"


def protocol(**fields: object) -> str:
    """`protocol(fid="classifier:1a2b3c4d", n=200)` → "fid=classifier:1a2b3c4d n=200"."""
    for key, value in fields.items():
        if not str(value) or any(c.isspace() for c in str(value)):
            raise ValueError(f"protocol field {key}={value!r}: values must be non-empty without spaces")
    return " ".join(f"{key}={value}" for key, value in fields.items())


def parse_protocol(text: str) -> dict[str, str]:
    """Inverse of `protocol`; a word without "=" (an older free-text protocol) maps to key "definition"."""
    fields = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
        else:
            fields["definition"] = f"{fields['definition']} {word}" if "definition" in fields else word
    return fields


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
