"""Does every model of a run learn? The learning table's figures, printed from its metric CSVs.

    python benchmarks/learning.py --out results [--config results/config/<hash>.json]

Prints what `snakemake learning` writes to results/tables/learning.md — the class_acc of the frozen
classifier on the validation images, on the frozen VAE's and every tokenizer's reconstructions
(refiner and flow decoding, with PSNR), on every generator's samples and along the CFG sweeps — for
any run, finished or not: a CSV that does not exist yet shows as "missing". Run it before and after a
change that trades learning for speed (fewer steps, smaller models) to see what it costs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semtok import config, paths
from semtok.report import learning


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="the run's out_dir")
    parser.add_argument(
        "--config", help="the run's config (default: the newest of <out>/config/*.json, its last invocation)"
    )
    args = parser.parse_args()
    out = Path(args.out)
    cfg = config.load(args.config or paths.latest_config(out), [f"out_dir={out}"])
    print(learning.to_markdown(cfg, learning.collect(cfg, out, strict=False)), end="")


if __name__ == "__main__":
    main()
