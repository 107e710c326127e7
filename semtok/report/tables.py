"""The paper's tables from the tidy metric CSVs, as CSV, Markdown and LaTeX (the `table` job builds one;
`--name learning` is the learning table of semtok.report.learning).

Every metric cell shows our reproduced value, the paper's reported value and their difference
(ours − paper) — the difference only where ours was measured under the paper's protocol (same
definition, extractor, reference and sample count: semtok.report.protocols), else `n/c` with the
reason in the notes. Rows of other methods are copied from the paper and marked "reported only". A
footer lists the table's notes, each of our runs (its config), the protocol of every reproduced
number (the CSV `protocol`, `config_hash` and `n_samples` columns) and the hash of the config the
table was built with. Inputs: `semtok.report.spec.table_needs` (the same list the Snakemake rule
declares).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from semtok.config import Config, ReportConfig, section_hash
from semtok.eval.records import COLUMNS, ORIGINAL, VAE
from semtok.report.protocols import not_comparable
from semtok.report.reported import TABLES, Column, PaperTable
from semtok.report.spec import (
    Input,
    bound,
    notes,
    require,
    row_needs,
    run_settings,
    table_needs,
    target_hash,
    training_images,
)

CSV_COLUMNS = COLUMNS
REPORTED_ONLY = "reported only"
NA = "–"
NOT_COMPARABLE = "n/c"
REFERENCE_RUNS = {
    ORIGINAL: "the validation images themselves (the class_acc classifier's own accuracy)",
    VAE: "the frozen VAE alone, encode → decode of the validation images (the ceiling of every tokenizer)",
}


class TableError(ValueError):
    """An input CSV breaks the contract (columns, run, NaN, missing metric); the message names it."""


@dataclass(frozen=True)
class Measured:
    """One reproduced number with its provenance."""

    value: float
    protocol: str
    config_hash: str
    n_samples: int | None


@dataclass(frozen=True)
class Cell:
    ours: Measured | None  # None: reported-only row, or an optional metric the CSV lacks
    paper: float | None  # None: "-" in the paper
    why_not: str | None = None  # why ours is not comparable with paper (None: comparable, or no pair)
    run: Input | None = None  # the CSV of our number (None: reported-only row)

    @classmethod
    def make(cls, metric: str, ours: Measured | None, paper: float | None, run: Input | None = None) -> Cell:
        pair = ours is not None and paper is not None
        setting = "" if run is None else run.setting
        return cls(ours, paper, not_comparable(metric, ours.protocol, setting) if pair else None, run)

    @property
    def comparable(self) -> bool | None:
        """None when there is no pair to compare."""
        return None if self.ours is None or self.paper is None else self.why_not is None

    @property
    def diff(self) -> float | None:
        return self.ours.value - self.paper if self.comparable else None


def read_metrics(path: Path, need: Input) -> dict[str, Measured]:
    """The metrics of one tidy CSV (columns: semtok.eval.records.COLUMNS), checked against the run it
    should hold."""
    frame = pd.read_csv(path, dtype={"config_hash": str, "protocol": str, "variant": str, "setting": str})
    if tuple(frame.columns) != CSV_COLUMNS:
        raise TableError(f"{path}: columns {list(frame.columns)}, expected {list(CSV_COLUMNS)}")
    wrong = frame[
        (frame.kind != need.kind) | (frame.variant != need.variant) | (frame.setting != need.setting)
    ]
    if len(wrong):
        got = wrong.iloc[0]
        raise TableError(
            f"{path}: holds run ({got.kind}, {got.variant}, {got.setting}), "
            f"expected ({need.kind}, {need.variant}, {need.setting})"
        )
    duplicated = frame.metric[frame.metric.duplicated()].tolist()
    if duplicated:
        raise TableError(f"{path}: metric(s) {duplicated} appear more than once")
    out = {}
    for rec in frame.itertuples(index=False):
        value = float(rec.value)
        if not math.isfinite(value):
            raise TableError(f"{path}: metric {rec.metric!r} is {value}")
        n = None if pd.isna(rec.n_samples) else int(rec.n_samples)
        protocol = "" if pd.isna(rec.protocol) else str(rec.protocol)
        out[rec.metric] = Measured(value, protocol, str(rec.config_hash), n)
    return out


def bits_per_pixel(cfg: Config, variant: str) -> Measured:
    """d·K/(H·W) of a tokenizer variant, from the config (Table 1's compression ratio)."""
    tok = cfg.tokenizer_variant(variant)
    value = tok.bits * tok.num_tokens / cfg.data.resolution**2
    provenance = section_hash(tok.bits, tok.num_tokens, cfg.data.resolution)
    return Measured(value, "d·K/(H·W) from the config", provenance, None)


def _measure(
    cfg: Config, col: Column, need: Input, metrics: dict[str, Measured], path: Path
) -> Measured | None:
    if col.metric in metrics:
        return metrics[col.metric]
    if col.metric == "bpp":
        return bits_per_pixel(cfg, need.variant)
    if col.optional:
        return None
    raise TableError(f"{path}: no metric {col.metric!r} (has {sorted(metrics)})")


def build(table: PaperTable, cfg: Config, out: Path) -> list[list[Cell]]:
    """Cells (rows × columns) of `table` from the CSVs under `out`; fails on a missing or bad input."""
    needs = table_needs(cfg, table.name)
    paths = dict(zip(needs, require(needs, out, table.name), strict=True))
    metrics = {need: read_metrics(path, need) for need, path in paths.items()}
    runs = row_needs(cfg, table)
    cells = []
    for i, row in enumerate(table.rows):
        line = []
        for col in table.columns:
            need = runs[2 * i] if col.kind == "recon" else runs[2 * i + 1]
            ours = None if need is None else _measure(cfg, col, need, metrics[need], paths[need])
            line.append(Cell.make(col.metric, ours, row.reported[col.metric], need))
        cells.append(line)
    return cells


def load_metrics(results: Path, kind: str) -> pd.DataFrame:
    """Every tidy CSV under `<results>/metrics/<kind>/` (kind: recon | gen) in one frame."""
    files = sorted((Path(results) / "metrics" / kind).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no metric CSVs under {Path(results) / 'metrics' / kind}")
    return pd.concat([pd.read_csv(f, dtype={"config_hash": str}) for f in files], ignore_index=True)


def comparison(
    metrics: pd.DataFrame, names: list[str] | None = None, report: ReportConfig | None = None
) -> pd.DataFrame:
    """Our rows of the paper tables against whatever tidy metrics are at hand (NaN where a run is
    missing): columns table, row, run, metric, ours, paper, diff (NaN where not comparable),
    comparable. Rows are bound to variants by `report` (the config's section; default: the default
    variant names). For notebooks; `build` is strict."""
    report = report or ReportConfig()
    indexed = metrics.set_index(["kind", "variant", "setting", "metric"])
    records = []
    for name in names or list(TABLES):
        table = TABLES[name]
        for row in table.rows:
            for col in table.columns:
                role = row.run(col.kind)
                if role is None or col.count:
                    continue
                run = bound(report, col.kind, role)
                key = (col.kind, *run, col.metric)
                measured = None
                if key in indexed.index:
                    found = indexed.loc[key]
                    measured = Measured(float(found.value), str(found.protocol), "", None)
                cell = Cell.make(col.metric, measured, row.reported[col.metric], Input(col.kind, *run))
                ours = float("nan") if measured is None else measured.value
                paper = float("nan") if cell.paper is None else cell.paper
                records.append(
                    {
                        "table": name,
                        "row": row.label,
                        "run": f"{run[0]}-{run[1]}",
                        "metric": col.metric,
                        "ours": ours,
                        "paper": paper,
                        "diff": float("nan") if cell.diff is None else cell.diff,
                        "comparable": cell.comparable,
                    }
                )
    return pd.DataFrame.from_records(records)


# ----------------------------------------------------------------------------------------------
# Formatting


def _count(value: float, sign: bool = False) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            scaled = value / scale
            return f"{scaled:{'+' if sign else ''}.{1 if abs(scaled) < 10 else 0}f}{unit}"
    return f"{value:{'+' if sign else ''}.0f}"


def format_number(value: float | None, col: Column, sign: bool = False) -> str:
    if value is None:
        return NA
    if col.count:
        return _count(value, sign)
    return f"{value:{'+' if sign else ''}.{col.decimals}f}"


def header(col: Column) -> str:
    arrow = {"lower": "↓", "higher": "↑", None: ""}[col.better]
    return col.header + arrow


def run_name(line: list[Cell]) -> str:
    """The runs of a row's cells: "b18-refiner", "no-sem-refiner + ar-l-no-sem-main" (reconstruction
    first), or "reported only"."""
    runs = dict.fromkeys(cell.run for cell in line if cell.run is not None)
    names = [f"{run.variant}-{run.setting}" for run in sorted(runs, key=lambda run: run.kind != "recon")]
    return " + ".join(names) if names else REPORTED_ONLY


def to_frame(table: PaperTable, cells: list[list[Cell]]) -> pd.DataFrame:
    """Long form: one line per (row, metric) with ours, paper, diff and the number's provenance."""
    records: list[dict[str, Any]] = []
    for row, line in zip(table.rows, cells, strict=True):
        for col, cell in zip(table.columns, line, strict=True):
            records.append(
                {
                    "table": table.name,
                    "row": row.label,
                    "run": run_name(line),
                    **dict(zip(table.info, row.info, strict=True)),
                    "metric": col.metric,
                    "ours": None if cell.ours is None else cell.ours.value,
                    "paper": cell.paper,
                    "diff": cell.diff,
                    "comparable": cell.comparable,
                    "protocol": None if cell.ours is None else cell.ours.protocol,
                    "config_hash": None if cell.ours is None else cell.ours.config_hash,
                    "n_samples": None if cell.ours is None else cell.ours.n_samples,
                }
            )
    return pd.DataFrame.from_records(records).astype({"n_samples": "Int64"})


def _run_lines(table: PaperTable, cfg: Config) -> list[str]:
    """Each of our runs with the config values that shape it."""
    lines = []
    for need in table_needs(cfg, table.name):
        if need.reference:
            lines.append(f"{need.variant}-{need.setting}: {REFERENCE_RUNS[need.variant, need.setting]}")
        elif need.kind == "recon":
            t = run_settings(cfg, need)
            shape = f"d={t['bits']}, K={t['num_tokens']}, {t['resolution']}×{t['resolution']} px"
            lines.append(
                f"{need.variant}-{need.setting}: tokenizer {need.variant} ({t['quantizer']}, {shape})"
            )
        else:
            g = run_settings(cfg, need)
            s = g["sample"]
            lines.append(
                f"{need.variant}-{need.setting}: generator {need.variant} (size {g['size']} {g['dims']}, "
                f"head {g['head']}, tokenizer {g['tokenizer']}; {s['steps']} steps, {s['order']} order, "
                f"top-p {s['top_p']}, CFG {s['cfg_schedule']} {s['cfg_scale']})"
            )
    return lines


def _protocol_lines(table: PaperTable, cells: list[list[Cell]]) -> list[str]:
    lines = []
    for row, line in zip(table.rows, cells, strict=True):
        for col, cell in zip(table.columns, line, strict=True):
            run = cell.run
            if run is not None:
                m = cell.ours
                where = f"{row.label} · {col.header} [{run.variant}-{run.setting}]"
                if m is None:
                    lines.append(f"{where}: n/a (not in the CSV)")
                else:
                    n = "" if m.n_samples is None else f", n={m.n_samples}"
                    lines.append(f"{where}: {m.protocol or 'no protocol given'} (config {m.config_hash}{n})")
    return lines


def _not_comparable_lines(table: PaperTable, cells: list[list[Cell]]) -> list[str]:
    """One line per (metric, reason) of the n/c cells, naming their runs."""
    runs: dict[tuple[str, str], list[str]] = {}
    for line in cells:
        for col, cell in zip(table.columns, line, strict=True):
            if cell.why_not is not None:
                runs.setdefault((col.header, cell.why_not), []).append(
                    f"{cell.run.variant}-{cell.run.setting}"
                )
    return [f"{NOT_COMPARABLE} {header} [{', '.join(r)}]: {why}." for (header, why), r in runs.items()]


def budget_lines(cfg: Config, variants: list[str]) -> tuple[list[str], str]:
    """Each tokenizer variant's training budget (images seen in Stage I and II, `training_images`),
    and a note: equal, or not comparable at equal budget."""
    budgets = {v: training_images(cfg, v) for v in variants}
    lines = [f"{v}: Stage I {a:,} + Stage II {b:,} = {a + b:,} images" for v, (a, b) in budgets.items()]
    totals = sorted({sum(b) for b in budgets.values()})
    if len(totals) == 1:
        return lines, f"Every row saw the same training budget ({totals[0]:,} images)."
    note = (
        f"Unequal training budgets ({totals[0]:,} to {totals[-1]:,} images): the rows' differences mix the "
        f"training strategy with {totals[-1] / totals[0]:.1f}× as much training, so they are {NOT_COMPARABLE} "
        "as an ablation at equal budget (equal budgets: the variants' stage1/stage2 optim steps)."
    )
    return lines, note


def footer(table: PaperTable, cells: list[list[Cell]], cfg: Config) -> dict[str, list[str]]:
    budget: dict[str, list[str]] = {}
    budget_note = []
    if table.budget:
        variants = [n.variant for n in table_needs(cfg, table.name) if n.kind == "recon" and not n.reference]
        budget["Budget"], note = budget_lines(cfg, variants)
        budget_note = [note]
    return {
        "Notes": [
            f"Δ = ours − paper, only where ours was measured under the paper's protocol (same definition, "
            f"feature extractor, reference and sample count); {NOT_COMPARABLE} = not comparable, for the "
            f"reason listed. Rows marked “{REPORTED_ONLY}” are the paper's numbers for other methods.",
            *notes(cfg, table),
            *budget_note,
            *_not_comparable_lines(table, cells),
        ],
        "Runs": _run_lines(table, cfg),
        **budget,
        "Protocols": _protocol_lines(table, cells),
        "Config": [f"run_id {cfg.run_id}, config hash {target_hash(cfg, table.name)}"],
    }


def _wide_rows(table: PaperTable, cells: list[list[Cell]]) -> list[list[str]]:
    out = []
    for row, line in zip(table.rows, cells, strict=True):
        values = []
        for col, cell in zip(table.columns, line, strict=True):
            ours = format_number(cell.ours.value, col) if cell.ours else ("n/a" if row.ours else NA)
            diff = NOT_COMPARABLE if cell.comparable is False else format_number(cell.diff, col, sign=True)
            values += [ours, format_number(cell.paper, col), diff]
        out.append([row.label, *row.info, run_name(line), *values])
    return out


def md_text(text: str) -> str:
    """Text as Markdown shows it literally: the paper's footnote marks and `bits*tokens/(H*W)` are not
    emphasis."""
    return text.replace("*", "\\*")


def to_markdown(table: PaperTable, cells: list[list[Cell]], cfg: Config) -> str:
    heads = ["", *table.info, "Run"]
    for col in table.columns:
        heads += [f"{header(col)} ours", f"{header(col)} paper", f"{header(col)} Δ"]
    lines = [f"**{table.name.replace('table', 'Table ')}: {md_text(table.caption)}**", ""]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in _wide_rows(table, cells)
    ]
    for title, items in footer(table, cells, cfg).items():
        lines += ["", f"{title}:", *(f"- {md_text(item)}" for item in items)]
    return "\n".join(lines) + "\n"


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "✓": r"\checkmark{}",
    "✗": r"$\times$",
    "×": r"$\times$",
    "≈": r"$\approx$",
    "·": r"$\cdot$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "Δ": r"$\Delta$",
    "±": r"$\pm$",
    "σ": r"$\sigma$",
    "Σ": r"$\Sigma$",
    "√": r"$\surd$",
    "ᵢ": r"$_i$",
    "²": r"$^2$",
    "−": "--",
    "–": "--",
    "“": "``",
    "”": "''",
}


def tex(text: str) -> str:
    """Escape text for LaTeX; "2^18" becomes 2$^{18}$."""
    parts = re.split(r"\^(\d+)", text)
    return "".join(
        f"$^{{{p}}}$" if i % 2 else "".join(_TEX.get(c, c) for c in p) for i, p in enumerate(parts)
    )


def to_latex(table: PaperTable, cells: list[list[Cell]], cfg: Config) -> str:
    """A booktabs `table` (needs \\usepackage{booktabs,amssymb})."""
    lead = 2 + len(table.info)
    spec = "l" * lead + "rrr" * len(table.columns)
    top = ["", *table.info, "Run"] + [rf"\multicolumn{{3}}{{c}}{{{tex(header(c))}}}" for c in table.columns]
    rules = " ".join(
        rf"\cmidrule(lr){{{lead + 3 * i + 1}-{lead + 3 * i + 3}}}" for i in range(len(table.columns))
    )
    sub = [""] * lead + ["ours", "paper", r"$\Delta$"] * len(table.columns)
    lines = [
        f"% semtok table --name {table.name}; needs \\usepackage{{booktabs,amssymb}}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex(table.caption)} Reproduced (ours) vs.\ reported (paper).}}",
        rf"\label{{tab:{table.name}}}",
        r"\resizebox{\linewidth}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(top) + r" \\",
        rules,
        " & ".join(sub) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(tex(c) for c in r) + r" \\" for r in _wide_rows(table, cells)]
    lines += [r"\bottomrule", r"\end{tabular}}", r"\par\smallskip", r"{\footnotesize\raggedright"]
    for title, items in footer(table, cells, cfg).items():
        sep = " " if title == "Notes" else "; "  # notes are sentences, the rest are entries
        lines.append(rf"\textbf{{{title}.}} " + sep.join(tex(i) for i in items) + r"\par")
    lines += ["}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(table: PaperTable, cfg: Config, results: Path, outputs: dict[str, Path]) -> dict[str, Any]:
    """Build `table` from the CSVs under `results` and write outputs {"csv"|"md"|"tex": path}."""
    cells = build(table, cfg, results)
    texts = {
        "csv": to_frame(table, cells).to_csv(index=False),
        "md": to_markdown(table, cells, cfg),
        "tex": to_latex(table, cells, cfg),
    }
    return {"table": table.name, "rows": len(cells), "outputs": write_texts(texts, outputs)}


def write_texts(texts: dict[str, str], outputs: dict[str, Path]) -> list[str]:
    """Write each format's text to its path ({"csv"|"md"|"tex": path}); returns the paths written."""
    for ext, path in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(texts[ext])
    return [str(p) for p in outputs.values()]
