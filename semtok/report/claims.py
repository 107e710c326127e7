"""`semtok table --name claims` and `semtok figure --name claims`: which of the paper's findings the run
confirms. Our evidence on the paper's claims, not a table of the paper.

Every comparison the paper draws from its tables and figures (semtok/report/findings.py) is computed
from the metric CSVs (inputs: `semtok.report.spec.claims_needs`):

- effect = s · Σ wᵢ Mᵢ over the claim's terms, s = +1 for a higher-is-better metric M and −1 otherwise,
  so a positive effect is the paper's finding; a term over several settings of a sweep takes the best
  of them by M (as the paper picks its optima).
- noise = √(Σ wᵢ² σᵢ²). σᵢ is the seed-to-seed standard deviation of M over the main run and its seed
  replicas (`report.claims`: the `semtok` tokenizer's refiner reconstructions for a reconstruction
  term, the `ar_l` generator's main samples for a generation term) — measured once a family, applied to
  every run of it. For class_acc, σᵢ is at least the binomial standard error √(p(1−p)/n) of the run's
  own n images; where every term samples one trained generator (sweeps, orders) the training seed is
  shared and class_acc's σᵢ is that binomial error alone.
- verdict: *holds* if effect > z·noise, *reverses* if effect < −z·noise, *within noise* otherwise
  (z = `report.claims.z`); *not comparable* when the comparison's premise fails (unequal bits per
  pixel or training budget), the sweep lacks a setting the claim reads, or M has no measured noise.

The metric of a finding the paper states for reconstruction or generation in general is the config's
(`report.claims.reconstruction_metric`, `generation_metric`); the paper's numbers of such a row are its
PSNR or gFID. Written as CSV (one line per claim), Markdown and LaTeX, and a dot plot of every effect in
noise units with the ±z band (`figure`).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure as MplFigure
from scipy.stats import chi2

from semtok.config import Config
from semtok.report.findings import CLAIMS as FINDINGS
from semtok.report.findings import GENERATION, LOWER_IS_BETTER, RECONSTRUCTION, Claim, Term
from semtok.report.spec import (
    CLAIMS,
    CLAIMS_CAPTION,
    Family,
    Input,
    claims_needs,
    family,
    pick_needs,
    replica_needs,
    replicas,
    require,
    target_hash,
    training_images,
)
from semtok.report.tables import Measured, read_metrics, tex, write_texts

HOLDS, REVERSES, WITHIN_NOISE, NOT_COMPARABLE = "holds", "reverses", "within noise", "not comparable"
VERDICTS = (HOLDS, REVERSES, WITHIN_NOISE, NOT_COMPARABLE)
COLOURS = {HOLDS: "tab:green", REVERSES: "tab:red", WITHIN_NOISE: "tab:gray", NOT_COMPARABLE: "tab:olive"}
BINOMIAL = "class_acc"  # the metric whose sampling error is binomial
CLIP = 8.0  # the dot plot's effect axis, in noise units

Values = dict[Input, dict[str, Measured]]
Spread = dict[tuple[Family, str], tuple[float, int]]  # (family, metric) -> (seed sd, seeds)


@dataclass(frozen=True)
class Judged:
    """One claim on one run: per term the run it read, our number and the paper's; the effect, its noise
    (None where not measured) and the verdict with its reason."""

    claim: Claim
    metric: str
    runs: tuple[Input | None, ...]
    ours: tuple[float | None, ...]
    paper: tuple[float | None, ...]
    effect: float | None
    noise: float | None
    paper_effect: float | None
    verdict: str
    reason: str

    @property
    def standardised(self) -> float | None:
        """The effect in noise units."""
        if self.effect is None or not self.noise:
            return None
        return self.effect / self.noise


def deciding_metric(cfg: Config, claim: Claim) -> str:
    """The CSV metric that decides `claim`: its own, or the config's for a general finding."""
    general = {
        RECONSTRUCTION: cfg.report.claims.reconstruction_metric,
        GENERATION: cfg.report.claims.generation_metric,
    }
    return general.get(claim.metric, claim.metric)


def direction(metric: str) -> int:
    """+1 for a higher-is-better metric, −1 for a lower-is-better one."""
    return -1 if metric in LOWER_IS_BETTER else 1


def seed_spread(cfg: Config, values: Values) -> Spread:
    """(family, metric) → (standard deviation over the main run and its seed replicas, their number),
    for every metric all of a family's runs hold; nothing for a family without replicas."""
    out = {}
    for fam in ("tokenizers", "generators"):
        runs = [values[n] for n in replica_needs(cfg) if family(n.kind) == fam]
        if len(runs) < 2:
            continue
        for metric in set.intersection(*(set(r) for r in runs)):
            out[fam, metric] = (statistics.stdev(r[metric].value for r in runs), len(runs))
    return out


def binomial_error(m: Measured) -> float | None:
    """√(p(1−p)/n) of an accuracy measured on n images (None without a sample count)."""
    if not m.n_samples:
        return None
    return math.sqrt(max(m.value * (1 - m.value), 0.0) / m.n_samples)


def term_noise(metric: str, need: Input, m: Measured, spread: Spread, shared: bool) -> float | None:
    """σ of one term's number (see the module docstring); None where it was not measured."""
    seed = spread.get((family(need.kind), metric))
    seed_sd = None if seed is None else seed[0]
    if metric != BINOMIAL:
        return seed_sd
    sampling = binomial_error(m)
    if shared or seed_sd is None:
        return sampling
    return seed_sd if sampling is None else max(seed_sd, sampling)


def _pick(term: Term, metric: str, cfg: Config, values: Values) -> tuple[Input | None, Measured | None]:
    """The run a term reads and its number: the best by `metric` among the term's runs."""
    candidates = [(n, values[n].get(metric)) for n in pick_needs(cfg, term.pick)]
    candidates = [(n, m) for n, m in candidates if m is not None]
    if not candidates:
        return None, None
    return max(candidates, key=lambda c: direction(metric) * c[1].value)


def _premise(cfg: Config, claim: Claim, runs: list[Input], values: Values) -> str:
    """Why the claim's premise fails on these runs ("" when it holds)."""
    if claim.premise == "bpp":
        bpp = {n: values[n].get("bpp") for n in runs}
        if any(m is None for m in bpp.values()):
            return "bits per pixel not recorded"
        if len({round(m.value, 9) for m in bpp.values()}) > 1:
            shown = ", ".join(f"{n.variant} {m.value:.4f}" for n, m in bpp.items())
            return f"unequal bits per pixel ({shown})"
    if claim.premise == "budget":
        budgets = {n.variant: sum(training_images(cfg, n.variant)) for n in runs}
        if len(set(budgets.values())) > 1:
            shown = ", ".join(f"{v} {b:,}" for v, b in budgets.items())
            return f"unequal training budgets ({shown} images)"
    return ""


def judge(cfg: Config, claim: Claim, values: Values, spread: Spread) -> Judged:
    """The verdict of one claim from the run's numbers (see the module docstring). A claim that is not
    comparable still shows its effect and, where measured, its noise."""
    metric = deciding_metric(cfg, claim)
    picked = [_pick(term, metric, cfg, values) for term in claim.terms]
    weights = [t.weight for t in claim.terms]
    runs = tuple(n for n, _ in picked)
    ours = tuple(None if m is None else m.value for _, m in picked)
    paper = tuple(None if t.paper is None else t.paper.reported.get(claim.paper_metric) for t in claim.terms)
    paper_effect = None
    if all(t.paper is not None for t in claim.terms) and None not in paper:
        paper_effect = direction(claim.paper_metric) * sum(w * p for w, p in zip(weights, paper, strict=True))
    judged = partial(
        Judged, claim=claim, metric=metric, runs=runs, ours=ours, paper=paper, paper_effect=paper_effect
    )
    if None in runs:
        missing = ", ".join(
            f"the {t.pick.sweep} sweep's {t.pick.which} setting" if t.pick.run is None else t.pick.run[0]
            for t, n in zip(claim.terms, runs, strict=True)
            if n is None
        )
        return judged(effect=None, noise=None, verdict=NOT_COMPARABLE, reason=f"no {metric} of {missing}")
    effect = direction(metric) * sum(w * v for w, v in zip(weights, ours, strict=True))
    shared = all(n.kind == "gen" for n in runs) and len({n.variant for n in runs}) == 1
    sigmas = [term_noise(metric, n, m, spread, shared) for n, m in picked]
    noise = None
    if None not in sigmas:
        noise = math.sqrt(sum(w**2 * x**2 for w, x in zip(weights, sigmas, strict=True)))
    why = _premise(cfg, claim, list(runs), values) or (
        "" if noise is not None else f"no measured noise of {metric}"
    )
    if why:
        return judged(effect=effect, noise=noise, verdict=NOT_COMPARABLE, reason=why)
    z = cfg.report.claims.z
    verdict = HOLDS if effect > z * noise else REVERSES if effect < -z * noise else WITHIN_NOISE
    return judged(effect=effect, noise=noise, verdict=verdict, reason="")


def collect(cfg: Config, results: Path) -> tuple[list[Judged], Spread]:
    """Every claim judged on the CSVs under `results`, and the measured seed spread."""
    needs = claims_needs(cfg)
    paths = dict(zip(needs, require(needs, results, CLAIMS), strict=True))
    values = {n: read_metrics(p, n) for n, p in paths.items()}
    spread = seed_spread(cfg, values)
    return [judge(cfg, claim, values, spread) for claim in FINDINGS], spread


# ----------------------------------------------------------------------------------------------
# Formatting

DECIMALS = {"PSNR": 2, "rFID": 2, "gFID": 2, "IS": 1, "Precision": 2, "Recall": 2}  # others: 3
HEADER = ["#", "Finding", "Source", "Runs (ours)", "Metric", "Paper", "Ours", "Effect ± noise", "Verdict"]


def number(value: float | None, metric: str, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:{'+' if sign else ''}.{DECIMALS.get(metric, 3)}f}"


def signed_terms(weights: list[int], texts: list[str]) -> str:
    """Terms as text: A vs B for a comparison of two, else the weighted sum (−a +2×b −c)."""
    if weights == [1, -1]:
        return " vs ".join(texts)
    signs = {1: "+", -1: "−"}
    return " ".join(
        f"{signs.get(w, f'{w:+d}×'.replace('-', '−'))}{t}" for w, t in zip(weights, texts, strict=True)
    )


def cells(j: Judged) -> dict[str, str]:
    """The text of a judged claim: runs, metric, paper, ours, effect ± noise, verdict."""
    weights = [t.weight for t in j.claim.terms]
    runs = ["–" if n is None else f"{n.variant}-{n.setting}" for n in j.runs]
    paper = j.claim.paper or "–"
    if j.paper_effect is not None:
        values = signed_terms(weights, [number(v, j.claim.paper_metric) for v in j.paper])
        paper = f"{values} ({number(j.paper_effect, j.claim.paper_metric, sign=True)})"
    metric = j.metric
    if j.paper_effect is not None and j.metric != j.claim.paper_metric:
        metric = f"{j.metric} (paper: {j.claim.paper_metric})"
    effect = "–" if j.effect is None else number(j.effect, j.metric, sign=True)
    if j.effect is not None and j.noise:  # the noise to 2 significant digits, the effect as precisely
        digits = max(DECIMALS.get(j.metric, 3), 1 - math.floor(math.log10(j.noise)))
        effect = f"{j.effect:+.{digits}f} ± {j.noise:.{digits}f} ({j.standardised:+.1f}σ)"
    elif j.effect is not None and j.noise == 0:
        effect += " ± 0"
    return {
        "runs": signed_terms(weights, runs),
        "metric": metric,
        "paper": paper,
        "ours": signed_terms(weights, [number(v, j.metric) for v in j.ours]),
        "effect": effect,
        "verdict": f"{j.verdict}: {j.reason}" if j.reason else j.verdict,
    }


def rows(judged: list[Judged]) -> list[list[str]]:
    """The table's cells, in `HEADER` order."""
    keys = ("runs", "metric", "paper", "ours", "effect", "verdict")
    return [
        [str(i), j.claim.statement, j.claim.source, *(cells(j)[k] for k in keys)]
        for i, j in enumerate(judged, 1)
    ]


def to_frame(cfg: Config, judged: list[Judged]) -> pd.DataFrame:
    """One line per claim: its texts and the numbers behind the verdict."""
    records = []
    for j in judged:
        c = cells(j)
        records.append(
            {
                "claim": j.claim.name,
                "source": j.claim.source,
                "statement": j.claim.statement,
                "metric": j.metric,
                "paper_metric": j.claim.paper_metric,
                "runs": c["runs"],
                "ours": c["ours"],
                "paper": c["paper"],
                "paper_effect": j.paper_effect,
                "effect": j.effect,
                "noise": j.noise,
                "effect_in_noise": j.standardised,
                "z": cfg.report.claims.z,
                "verdict": j.verdict,
                "reason": j.reason,
            }
        )
    return pd.DataFrame.from_records(records)


def counts(judged: list[Judged]) -> str:
    """How many claims got each verdict, e.g. holds 13, reverses 5, within noise 2, not comparable 1."""
    return ", ".join(f"{v} {sum(j.verdict == v for j in judged)}" for v in VERDICTS)


def rule(cfg: Config) -> str:
    z = f"{cfg.report.claims.z:g}"
    return (
        "effect = the claim's difference in its metric's better direction (positive: as the paper finds; a "
        "term over several settings takes their best); noise = √(Σ wᵢ²σᵢ²), σᵢ the seed-to-seed standard "
        "deviation of the metric over the family's main run and its seed replicas (Noise) — for class_acc at "
        "least the binomial standard error √(p(1−p)/n) of the run's n images, and that error alone where "
        f"every term samples one trained generator. Verdict: holds if effect > {z}·noise, reverses if "
        f"effect < −{z}·noise, within noise otherwise; not comparable where the comparison's premise fails "
        "(unequal bits per pixel or training budget), a number is missing or the metric's noise is unmeasured."
    )


def sd_interval(seeds: int, level: float = 0.95) -> tuple[float, float]:
    """How far the true standard deviation may lie from one estimated from `seeds` runs: the factors
    (low, high) of the `level` confidence interval σ ∈ [low·s, high·s] for normal data, from
    (n − 1)s²/σ² ~ χ²(n − 1). Two seeds (one degree of freedom) give 0.45 to 31.9."""
    if seeds < 2:
        raise ValueError(f"a standard deviation needs at least 2 seeds, got {seeds}")
    dof, tail = seeds - 1, (1 - level) / 2
    return math.sqrt(dof / chi2.ppf(1 - tail, dof)), math.sqrt(dof / chi2.ppf(tail, dof))


def noise_lines(cfg: Config, judged: list[Judged], spread: Spread) -> list[str]:
    """The measured seed spread of each family's deciding metrics, a family a line, with how far the
    true spread may lie from an estimate of so few seeds."""
    used = {(family(n.kind), j.metric) for j in judged for n in j.runs if n is not None}
    what = {"tokenizers": "refiner reconstructions", "generators": "main samples"}
    lines = []
    for fam, names in replicas(cfg).items():
        if len(names) < 2:
            lines.append(
                f"{fam}: no seed replicas of {names[0]} (report.claims): only class_acc has a noise level"
            )
            continue
        sds = ", ".join(
            f"{m} {number(spread[fam, m][0], m)}" for f, m in sorted(used) if f == fam and (f, m) in spread
        )
        low, high = sd_interval(len(names))
        lines.append(
            f"{fam}: {len(names)} seeds ({', '.join(names)}; {what[fam]}), standard deviation: {sds}; "
            f"from {len(names)} seeds the true one lies within {low:.2f}–{high:.1f}× each estimate (95 %), "
            "so a verdict near the threshold can change between runs"
        )
    return lines


def footer(cfg: Config, judged: list[Judged], spread: Spread) -> dict[str, list[str]]:
    return {
        "Verdicts": [f"{counts(judged)} (of {len(judged)} comparisons)."],
        "Rule": [rule(cfg)],
        "Noise": noise_lines(cfg, judged, spread),
        "Notes": [
            "Paper: the paper's numbers of each term in its metric (general findings: PSNR for reconstruction, "
            "gFID for generation) and their effect; a finding drawn from a figure states what the figure shows.",
            "Runs: our run of each term; a term over a sweep names the setting it took. Table 4's middle rows "
            "are read as contrastive only and distillation only (its checkmarks are lost; see table4).",
        ],
        "Config": [f"run_id {cfg.run_id}, config hash {target_hash(cfg, CLAIMS)}"],
    }


def to_markdown(cfg: Config, judged: list[Judged], spread: Spread) -> str:
    out = [f"**{CLAIMS_CAPTION}**", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows(judged)]
    for title, items in footer(cfg, judged, spread).items():
        out += ["", f"{title}:", *(f"- {item}" for item in items)]
    return "\n".join(out) + "\n"


def to_latex(cfg: Config, judged: list[Judged], spread: Spread) -> str:
    """A booktabs `table` (needs \\usepackage{booktabs,amssymb})."""
    out = [
        f"% semtok table --name {CLAIMS}; needs \\usepackage{{booktabs,amssymb}}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex(CLAIMS_CAPTION)}}}",
        rf"\label{{tab:{CLAIMS}}}",
        r"\resizebox{\linewidth}{!}{%",
        r"\begin{tabular}{rp{5cm}lp{4cm}lp{3cm}p{3cm}lp{3cm}}",
        r"\toprule",
        " & ".join(tex(h) for h in HEADER) + r" \\",
        r"\midrule",
        *(" & ".join(tex(c) for c in row) + r" \\" for row in rows(judged)),
        r"\bottomrule",
        r"\end{tabular}}",
        r"\par\smallskip",
        r"{\footnotesize\raggedright",
    ]
    for title, items in footer(cfg, judged, spread).items():
        out.append(rf"\textbf{{{title}.}} " + " ".join(tex(i) for i in items) + r"\par")
    out += ["}", r"\end{table}"]
    return "\n".join(out) + "\n"


def draw(cfg: Config, judged: list[Judged]) -> MplFigure:
    """Every claim's effect in noise units, coloured by verdict, beside the ±z band of "within noise";
    effects beyond ±CLIP sit at the edge with their value written; a not comparable claim is hollow
    (at its effect where its noise was measured, else at 0)."""
    z = cfg.report.claims.z
    fig = MplFigure(figsize=(11, 0.3 * len(judged) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.axvspan(-z, z, color="0.9", zorder=0, label=f"±{z:g}·noise")
    ax.axvline(0, color="0.6", linewidth=0.8, zorder=1)
    for y, j in enumerate(judged):
        x = j.standardised or 0.0
        shown = max(-CLIP, min(CLIP, x))
        hollow = j.verdict == NOT_COMPARABLE
        colour = COLOURS[j.verdict]
        ax.plot([shown], [y], marker="o", color=colour, markerfacecolor="none" if hollow else colour)
        if shown != x:
            ax.annotate(
                f"{x:+.0f}", (shown, y), xytext=(0, 5), textcoords="offset points", ha="center", fontsize=7
            )
    for verdict in VERDICTS:
        ax.plot([], [], marker="o", color=COLOURS[verdict], linestyle="none", label=verdict)
    labels = [f"{j.claim.statement} ({j.claim.source}; {j.metric})" for j in judged]
    ax.set_yticks(range(len(judged)), labels, fontsize=7)
    ax.set_ylim(len(judged) - 0.5, -0.5)
    ax.set_xlim(-CLIP - 0.7, CLIP + 0.7)
    ax.set_xlabel("effect / noise (positive: as the paper finds)")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.suptitle(f"The paper's findings on this run: {counts(judged)}", fontsize=9)
    return fig


def write(cfg: Config, results: Path, outputs: dict[str, Path]) -> dict[str, Any]:
    """Build the claims table of the run in `results`; outputs {"csv"|"md"|"tex": path}."""
    cfg = dataclasses.replace(cfg, out_dir=str(results))
    judged, spread = collect(cfg, results)
    texts = {
        "csv": to_frame(cfg, judged).to_csv(index=False),
        "md": to_markdown(cfg, judged, spread),
        "tex": to_latex(cfg, judged, spread),
    }
    return {"table": CLAIMS, "verdicts": counts(judged), "outputs": write_texts(texts, outputs)}


def figure(cfg: Config, results: Path) -> MplFigure:
    """The dot plot of the claims judged on the CSVs under `results`."""
    cfg = dataclasses.replace(cfg, out_dir=str(results))
    return draw(cfg, collect(cfg, results)[0])
