"""`semtok table --name learning`: does every model learn? Our evidence, not a table of the paper.

`class_acc` is the accuracy of a frozen classifier (registry.load_accuracy_classifier) on images
against the class they should show: the true labels for reconstructions, the requested labels for
samples (the "classification accuracy" of generative-model papers). Three blocks, from the metric
CSVs only (inputs: `semtok.report.spec.learning_needs`):

- Reconstruction: the classifier on the validation images themselves (what a perfect reconstruction
  keeps), the frozen VAE alone (the ceiling), and every tokenizer variant's one-step refiner and, where
  it has its own Stage I, flow decoding: PSNR and class_acc.
- Generation: every generator's main samples: class_acc.
- CFG: class_acc of the sweep generator along its linear and constant CFG sweeps.

Written as CSV (long form: block, row, run, metric, value and the number's provenance), Markdown and
LaTeX; `benchmarks/learning.py` prints the same figures for any finished run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from semtok.config import Config
from semtok.eval.records import ORIGINAL, VAE, parse_protocol
from semtok.report.spec import LEARNING, LEARNING_CAPTION, Input, learning_needs, require, target_hash
from semtok.report.tables import NA, Measured, TableError, read_metrics, tex
from semtok.sampling.settings import MAIN, parse_setting

MISSING = "missing"
RECON, GEN, CFG = "Reconstruction", "Generation (main setting)", "CFG sweeps"
COLUMNS = {RECON: ("PSNR", "class_acc"), GEN: ("class_acc",)}
DECIMALS = {"PSNR": 2, "class_acc": 3}
HEADERS = {"PSNR": "PSNR↑", "class_acc": "class_acc↑"}


@dataclass(frozen=True)
class Line:
    """One row of a block: its label, the CSV it comes from, and the metrics it shows."""

    block: str
    label: str  # in the CFG block: the scale
    need: Input
    metrics: tuple[str, ...]
    schedule: str = ""  # in the CFG block: linear | constant


def lines(cfg: Config) -> list[Line]:
    """The table's rows, in the order of `learning_needs`."""
    out = []
    for need in learning_needs(cfg):
        run = (need.variant, need.setting)
        if run == ORIGINAL:
            out.append(Line(RECON, "validation images", need, ("class_acc",)))
        elif run == VAE:
            out.append(Line(RECON, "frozen VAE (ceiling)", need, COLUMNS[RECON]))
        elif need.kind == "recon":
            steps = cfg.tokenizer_variant(need.variant).sampler.steps
            mode = "refiner (1 step)" if need.setting == "refiner" else f"flow ({steps} steps)"
            out.append(Line(RECON, f"{need.variant}, {mode}", need, COLUMNS[RECON]))
        elif need.setting == MAIN:
            out.append(Line(GEN, need.variant, need, COLUMNS[GEN]))
        else:
            sweep, scale = parse_setting(need.setting)
            out.append(Line(CFG, str(scale), need, ("class_acc",), dict(sweep.fixed)["cfg_schedule"]))
    return out


def collect(cfg: Config, results: Path, strict: bool = True) -> dict[Line, dict[str, Measured | None]]:
    """Each line's metrics from the CSVs under `results`. strict: a missing CSV or metric raises
    (MissingInput, TableError); otherwise it is None."""
    table = lines(cfg)
    needs = [line.need for line in table]
    if strict:
        require(needs, results, LEARNING)
    out = {}
    for line in table:
        path = line.need.path(results)
        found = read_metrics(path, line.need) if path.exists() else {}
        if strict and (absent := [m for m in line.metrics if m not in found]):
            raise TableError(f"{path}: no metric(s) {absent} (has {sorted(found)})")
        out[line] = {metric: found.get(metric) for metric in line.metrics}
    return out


def chance(values: dict[Line, dict[str, Measured | None]]) -> str:
    """The accuracy of guessing, 1 / the number of classes the class_acc protocols name (`classes=N`,
    written by every evaluation): "chance = 0.100 (1/10 classes)"."""
    counts = set()
    for metrics in values.values():
        m = metrics.get("class_acc")
        if m is not None and m.protocol:
            classes = parse_protocol(m.protocol).get("classes")
            if classes is not None:
                counts.add(int(classes))
    if not counts:
        return "chance = 1/(number of classes; the protocols do not name it)"
    return "; ".join(f"chance = {1 / n:.3f} (1/{n} classes)" for n in sorted(counts))


def to_frame(values: dict[Line, dict[str, Measured | None]]) -> pd.DataFrame:
    records = []
    for line, metrics in values.items():
        for metric, m in metrics.items():
            records.append(
                {
                    "block": line.block,
                    "row": line.label,
                    "run": f"{line.need.variant}-{line.need.setting}",
                    "metric": metric,
                    "value": None if m is None else m.value,
                    "protocol": None if m is None else m.protocol,
                    "config_hash": None if m is None else m.config_hash,
                    "n_samples": None if m is None else m.n_samples,
                }
            )
    return pd.DataFrame.from_records(records).astype({"n_samples": "Int64"})


def _number(m: Measured | None, metric: str) -> str:
    return MISSING if m is None else f"{m.value:.{DECIMALS[metric]}f}"


def blocks(values: dict[Line, dict[str, Measured | None]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows of cells) of each block; the CFG block has a column per schedule."""
    out = []
    for block, columns in COLUMNS.items():
        rows = [
            [line.label, f"{line.need.variant}-{line.need.setting}"]
            + [_number(metrics[c], c) if c in metrics else NA for c in columns]
            for line, metrics in values.items()
            if line.block == block
        ]
        out.append((block, [block, "Run", *(HEADERS[c] for c in columns)], rows))
    sweep: dict[str, dict[str, str]] = {}
    for line, metrics in values.items():
        if line.block == CFG:
            sweep.setdefault(line.label, {})[line.schedule] = _number(metrics["class_acc"], "class_acc")
    if sweep:
        rows = [[scale, by.get("linear", NA), by.get("constant", NA)] for scale, by in sweep.items()]
        rows.sort(key=lambda r: float(r[0]))
        out.append((CFG, ["CFG scale", "class_acc↑ linear", "class_acc↑ constant"], rows))
    return out


def footer(cfg: Config, values: dict[Line, dict[str, Measured | None]]) -> dict[str, list[str]]:
    runs_by_protocol: dict[tuple[str, str], list[str]] = {}
    for line, metrics in values.items():
        for metric, m in metrics.items():
            if m is not None:
                key = (metric, m.protocol or "no protocol given")
                runs_by_protocol.setdefault(key, []).append(f"{line.need.variant}-{line.need.setting}")
    return {
        "Notes": [
            f"class_acc: top-1 accuracy of the frozen classifier; {chance(values)}. "
            "Reconstructions are scored against the images' true labels, samples against the labels they "
            "were requested with; the validation images' own class_acc is what a perfect reconstruction keeps.",
            "A model has learned what its images should show when its class_acc is well above chance; the "
            "frozen VAE's reconstructions are the ceiling the tokenizers decode towards.",
            f"{MISSING}: the run's CSV or metric does not exist yet.",
        ],
        "Protocols": [
            f"{metric}: {proto} [{', '.join(runs)}]" for (metric, proto), runs in runs_by_protocol.items()
        ],
        "Config": [f"run_id {cfg.run_id}, config hash {target_hash(cfg, LEARNING)}"],
    }


def to_markdown(cfg: Config, values: dict[Line, dict[str, Measured | None]]) -> str:
    out = [f"**{LEARNING_CAPTION}**"]
    for title, head, rows in blocks(values):
        out += ["", f"*{title}*", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
    for title, items in footer(cfg, values).items():
        out += ["", f"{title}:", *(f"- {item}" for item in items)]
    return "\n".join(out) + "\n"


def to_latex(cfg: Config, values: dict[Line, dict[str, Measured | None]]) -> str:
    """A booktabs `table` with one tabular per block (needs \\usepackage{booktabs,amssymb})."""
    out = [
        f"% semtok table --name {LEARNING}; needs \\usepackage{{booktabs,amssymb}}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex(LEARNING_CAPTION)}}}",
        rf"\label{{tab:{LEARNING}}}",
    ]
    for title, head, rows in blocks(values):
        lead = 1 if title == CFG else 2  # label columns; the rest are numbers
        out += [
            rf"\par\smallskip\textit{{{tex(title)}}}\par",
            rf"\begin{{tabular}}{{{'l' * lead}{'r' * (len(head) - lead)}}}",
            r"\toprule",
            " & ".join(tex(h) for h in head) + r" \\",
            r"\midrule",
            *(" & ".join(tex(c) for c in row) + r" \\" for row in rows),
            r"\bottomrule",
            r"\end{tabular}",
        ]
    out += [r"\par\smallskip", r"{\footnotesize\raggedright"]
    for title, items in footer(cfg, values).items():
        sep = " " if title == "Notes" else "; "
        out.append(rf"\textbf{{{title}.}} " + sep.join(tex(i) for i in items) + r"\par")
    out += ["}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write(cfg: Config, results: Path, outputs: dict[str, Path]) -> dict[str, Any]:
    """Build the learning table of the run in `results` (its metric CSVs, and its train index for the
    class count); outputs {"csv"|"md"|"tex": path}."""
    cfg = dataclasses.replace(cfg, out_dir=str(results))
    values = collect(cfg, results)
    texts = {
        "csv": to_frame(values).to_csv(index=False),
        "md": to_markdown(cfg, values),
        "tex": to_latex(cfg, values),
    }
    for ext, path in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[ext])
    return {"table": LEARNING, "rows": len(values), "outputs": [str(p) for p in outputs.values()]}
