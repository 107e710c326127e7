"""The comparisons the paper draws from its tables and figures, as data: what the claims table
(`semtok table --name claims`, semtok/report/claims.py) judges on a run.

A `Claim` is one finding written as a weighted sum of numbers that the paper finds positive in the
metric's better direction: "A beats B" is A − B (2^32 beats 2^18 in PSNR), "the gains of more
sampling steps saturate" is (M(main) − M(first)) − (M(last) − M(main)) along the steps sweep. Each
`Term` reads one of our numbers (a `Pick`: the run of a row of the paper's tables, a setting of a
sampling sweep, or the best of several settings) and, for a finding drawn from a table, the paper's
number from that table's row (semtok/report/reported.py), so a claim compares exactly the roles the
tables bind. Findings drawn from figures (CFG, sampling steps, top-p, t-SNE) have no numbers in the
paper's text; their `paper` says what the figure shows.

The metric is a CSV metric, or `RECONSTRUCTION` / `GENERATION` for a finding the paper states for
reconstruction or generation in general: the config's `report.claims` metric decides it, read against
the paper's numbers of `PAPER_METRIC` (PSNR; gFID). A `premise` is what the comparison assumes equal:
"bpp" (bits per pixel, from the CSVs) or "budget" (training images, semtok.report.spec.training_images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from semtok.report.reported import TABLES, Row

Kind = Literal["recon", "gen"]
Which = Literal["first", "last", "main", "others", "interior", "ends", "all"]
Premise = Literal["", "bpp", "budget"]

RECONSTRUCTION, GENERATION = "reconstruction", "generation"
PAPER_METRIC = {RECONSTRUCTION: "PSNR", GENERATION: "gFID"}  # the paper's number of a general finding
LOWER_IS_BETTER = {"rFID", "LPIPS", "gFID"}  # every other metric a claim reads is higher-is-better


@dataclass(frozen=True)
class Pick:
    """Which of our numbers a term reads: `run` = (role, recon mode or sampling setting) of a table row,
    or a sweep (`evaluation.sweeps` key) of the sweep generator with `which` settings: "first", "last",
    "main" (the generator's own value), or the best by the claim's metric of "others" (all but main),
    "interior" (all but the first and last), "ends" (first and last) or "all"."""

    kind: Kind
    run: tuple[str, str] | None = None
    sweep: str = ""
    which: Which | None = None


@dataclass(frozen=True)
class Term:
    weight: int
    pick: Pick
    paper: Row | None = None  # the row of the paper's table holding its number


@dataclass(frozen=True)
class Claim:
    name: str  # short id, e.g. "b32-recon"
    statement: str  # the finding, in the paper's direction
    source: str  # "Table 1", "Fig. 7"
    terms: tuple[Term, ...]
    metric: str  # a CSV metric, RECONSTRUCTION or GENERATION
    premise: Premise = ""
    paper: str = ""  # what a figure shows (findings without numbers in the paper's text)

    @property
    def paper_metric(self) -> str:
        return PAPER_METRIC.get(self.metric, self.metric)


def _row(table: str, label: str, nth: int = 0) -> Row:
    rows = [row for row in TABLES[table].rows if row.label == label]
    return rows[nth]


def _row_term(
    weight: int, kind: Kind, table: str, label: str, nth: int = 0, run: tuple[str, str] | None = None
) -> Term:
    """The term of a table row: the row's own run of `kind`, or `run` for a row that is the paper's
    only (another method whose analogue we run)."""
    row = _row(table, label, nth)
    return Term(weight, Pick(kind, run or row.run(kind)), row)


def _sweep_term(weight: int, sweep: str, which: Which) -> Term:
    return Term(weight, Pick("gen", sweep=sweep, which=which))


def _beats(
    name: str, statement: str, source: str, metric: str, better: Term, worse: Term, premise: Premise = ""
) -> Claim:
    return Claim(name, statement, source, (better, worse), metric, premise)


def _table(
    name: str,
    statement: str,
    table: str,
    kind: Kind,
    metric: str,
    better: tuple,
    worse: tuple,
    premise: Premise = "",
) -> Claim:
    """A claim that row `better` beats row `worse` of `table` ((label[, nth]) each) in `metric`."""
    source = table.replace("table", "Table ")
    return _beats(
        name,
        statement,
        source,
        metric,
        _row_term(+1, kind, table, *better),
        _row_term(-1, kind, table, *worse),
        premise,
    )


R, G = RECONSTRUCTION, GENERATION
T4_NONE, T4_CONTRA, T4_DISTILL, T4_BOTH = ("none",), ("contrastive only",), ("distillation only",), ("both",)

CLAIMS: tuple[Claim, ...] = (
    # -- reconstruction
    _table(
        "b32-recon",
        "a 2^32 codebook reconstructs better than 2^18",
        "table1",
        "recon",
        R,
        ("SemTok (Ours)", 1),
        ("SemTok (Ours)", 0),
    ),
    _beats(
        "1d-vs-2d-recon",
        "1D tokens reconstruct better than a 2D grid at equal bits",
        "Table 1",
        R,
        _row_term(+1, "recon", "table1", "SemTok (Ours)"),
        _row_term(-1, "recon", "table1", "OpenMagViT-V2", run=("grid2d", "refiner")),
        premise="bpp",
    ),
    _table(
        "sem-recon", "both semantic losses improve reconstruction", "table4", "recon", R, T4_BOTH, T4_NONE
    ),
    _table(
        "contra-recon",
        "the contrastive loss alone improves reconstruction",
        "table4",
        "recon",
        R,
        T4_CONTRA,
        T4_NONE,
    ),
    _table(
        "distill-recon",
        "the distillation loss alone improves reconstruction",
        "table4",
        "recon",
        R,
        T4_DISTILL,
        T4_NONE,
    ),
    _table(
        "global-recon",
        "global (non-sequential) tokens reconstruct better than raster-ordered ones",
        "table5",
        "recon",
        R,
        ("Global",),
        ("Raster",),
    ),
    _table(
        "refiner-b18",
        "the one-step refiner beats flow decoding (2^18)",
        "table6",
        "recon",
        R,
        ("Refiner", 0),
        ("Diffusion", 0),
    ),
    _table(
        "refiner-b32",
        "the one-step refiner beats flow decoding (2^32)",
        "table6",
        "recon",
        R,
        ("Refiner", 1),
        ("Diffusion", 1),
    ),
    _table("bsq-lfq", "BSQ reconstructs better than LFQ", "table10", "recon", R, ("BSQ",), ("LFQ",)),
    _table(
        "perceptual-lpips",
        "LPIPS + ResNet losses beat the LPIPS loss alone",
        "table11",
        "recon",
        "LPIPS",
        ("LPIPS + ResNet",),
        ("LPIPS",),
    ),
    _table(
        "perceptual-resnet",
        "LPIPS + ResNet losses beat the ResNet loss alone",
        "table11",
        "recon",
        "LPIPS",
        ("LPIPS + ResNet",),
        ("ResNet",),
    ),
    _table(
        "lpips-ssim",
        "the LPIPS loss favours SSIM: LPIPS alone beats ResNet alone",
        "table11",
        "recon",
        "SSIM",
        ("LPIPS",),
        ("ResNet",),
    ),
    _table(
        "resnet-rfid",
        "the ResNet loss favours rFID: ResNet alone beats LPIPS alone",
        "table11",
        "recon",
        "rFID",
        ("ResNet",),
        ("LPIPS",),
    ),
    _table(
        "pretraining",
        "generative pre-training + fine-tuning beats fine-tuning only",
        "table12",
        "recon",
        R,
        ("Pre-training & Fine-tuning",),
        ("Only Fine-tuning",),
        premise="budget",
    ),
    Claim(
        "sem-clusters",
        "the semantic losses cluster the encoder's features by class",
        "Fig. 6",
        (
            Term(+1, Pick("recon", ("semtok", "refiner"))),
            Term(-1, Pick("recon", ("no_semantics", "refiner"))),
        ),
        "feature_silhouette",
        paper="clear class clusters with, none without (t-SNE)",
    ),
    # -- generation
    _table(
        "vs-2d-gen",
        "SemTok tokens generate better than a 2D grid (VQGAN)",
        "table3",
        "gen",
        G,
        ("SemTok (Ours)",),
        ("VQGAN",),
    ),
    _table(
        "vs-nosem-gen",
        "SemTok tokens generate better than 1D tokens without semantics (FlowMo-Lo)",
        "table3",
        "gen",
        G,
        ("SemTok (Ours)",),
        ("FlowMo-Lo",),
    ),
    _table("sem-gen", "both semantic losses improve generation", "table4", "gen", G, T4_BOTH, T4_NONE),
    _table(
        "contra-gen", "the contrastive loss alone improves generation", "table4", "gen", G, T4_CONTRA, T4_NONE
    ),
    _table(
        "distill-gen",
        "the distillation loss alone improves generation",
        "table4",
        "gen",
        G,
        T4_DISTILL,
        T4_NONE,
    ),
    _table(
        "global-gen",
        "masked generation of global tokens beats next-token prediction of raster tokens",
        "table5",
        "gen",
        G,
        ("Global",),
        ("Raster",),
    ),
    _table(
        "ar-xl",
        "AR-XL generates better than AR-L",
        "table2",
        "gen",
        G,
        ("SemTok-AR-XL (Ours)",),
        ("SemTok-AR-L (Ours)",),
    ),
    _table(
        "ar-xxl",
        "AR-XXL generates better than AR-XL",
        "table2",
        "gen",
        G,
        ("SemTok-AR-XXL (Ours)",),
        ("SemTok-AR-XL (Ours)",),
    ),
    _table(
        "bitwise",
        "the bitwise head generates better than two groups",
        "table13",
        "gen",
        G,
        ("18 (Bitwise)",),
        ("2",),
    ),
    _table(
        "random-order",
        "random order has a better gFID than confidence order",
        "table14",
        "gen",
        "gFID",
        ("Random",),
        ("Confidence-based",),
    ),
    Claim(
        "cfg-is",
        "IS rises with the linear CFG scale (largest vs smallest)",
        "Fig. 7",
        (_sweep_term(+1, "cfg_linear", "last"), _sweep_term(-1, "cfg_linear", "first")),
        "IS",
        paper="IS rises continuously with the scale",
    ),
    Claim(
        "cfg-gfid",
        "gFID along the linear CFG scale first falls, then rises (an interior optimum)",
        "Fig. 7",
        (_sweep_term(+1, "cfg_linear", "interior"), _sweep_term(-1, "cfg_linear", "ends")),
        "gFID",
        paper="gFID first declines, then increases",
    ),
    Claim(
        "cfg-schedule",
        "the linear CFG schedule's best beats the constant schedule's best",
        "Figs. 7, 8",
        (_sweep_term(+1, "cfg_linear", "all"), _sweep_term(-1, "cfg_constant", "all")),
        G,
        paper="the constant schedule's optimum is inferior",
    ),
    Claim(
        "steps-saturate",
        "more sampling steps saturate: the gain up to the main step count exceeds the gain beyond it",
        "Fig. 9",
        (
            _sweep_term(-1, "steps", "first"),
            _sweep_term(+2, "steps", "main"),
            _sweep_term(-1, "steps", "last"),
        ),
        G,
        paper="beyond 64 steps only marginal improvements",
    ),
    Claim(
        "top-p",
        "top-p 0.75 has the lowest gFID of the top-p sweep",
        "Fig. 10",
        (_sweep_term(+1, "top_p", "main"), _sweep_term(-1, "top_p", "others")),
        "gFID",
        paper="p = 0.75 has the lowest gFID",
    ),
)
