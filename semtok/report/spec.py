"""The report's specification: what each table and figure shows, and everything it reads.

Rows of the paper's tables (semtok/report/reported.py) and panels of its figures (`FIGURES`) name
*roles* — "the SemTok 2^18 tokenizer", "AR-L on the 2D-grid tokenizer" — never variants. The config's
`report.tokenizers` and `report.generators` bind each role to a variant (semtok/config.py; the defaults
are the variant names of both shipped configs), so renaming a variant is a change of the config alone.
Each role has its label here (`LABELS`), the one place a figure's legend comes from. Sampling settings
(`main`, `cfg-linear-3.0`, ...) are those of semtok.sampling.settings.

The rules (workflow/rules/report.smk) and the builders (tables.py, learning.py, figures.py) all take
their input lists from `table_inputs` and `figure_inputs` (table "learning": `learning_needs`) and the
config values they read from `target_settings`, whose hash is the rule's params (a table reruns only
when what it reads changes) and the hash a table prints. `REPORT_TABLES` lists every table the HTML
report shows (the paper's and ours) with its caption; a sweep figure's `PaperPoint`s are the numbers the
paper gives on it. Upstream rules can enumerate what to sample
and evaluate with `generator_settings` and `tokenizer_modes`. Two recon rows are not tokenizers: the
validation images (`original-val`, rule eval_reference) and the frozen VAE (`vae-frozen`, rule eval_vae).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from semtok import paths as P
from semtok.config import Config, ConfigError, ReportConfig, section_hash
from semtok.eval.records import ORIGINAL, VAE
from semtok.report.findings import CLAIMS as FINDINGS
from semtok.report.findings import Pick
from semtok.report.reported import TABLES, PaperTable, Row
from semtok.report.resources import RESOURCES, RESOURCES_CAPTION
from semtok.sampling.settings import (
    MAIN,
    PROGRESSIVE,
    SWEEPS,
    parse_setting,
    sample_config,
    setting_name,
    sweep_settings,
)

LEARNING = "learning"
LEARNING_CAPTION = (
    "Learning evidence: a frozen classifier's accuracy (class_acc) on the validation images, on "
    "reconstructions (true labels) and on samples (requested labels), with reconstruction PSNR."
)
CLAIMS = "claims"
CLAIMS_CAPTION = (
    "Which of the paper's findings the run confirms: each comparison the paper draws from its tables and "
    "figures, the paper's numbers, ours, and a verdict from the measured noise."
)
DATA_SUMMARY = "data_summary"  # written by rule data_summary
# Every table of the report (`tables/<name>.md`, shown as `tables/<name>.html`) with its caption: the
# paper's, then ours.
REPORT_TABLES: dict[str, str] = {
    **{name: table.caption for name, table in TABLES.items()},
    LEARNING: LEARNING_CAPTION,
    CLAIMS: CLAIMS_CAPTION,
    RESOURCES: RESOURCES_CAPTION,
    DATA_SUMMARY: "The data: images, classes, converted and rejected files and shards of each split.",
}
REFERENCE_RULES = {ORIGINAL: "eval_reference", VAE: "eval_vae"}  # recon rows that are not tokenizers

Family = Literal["tokenizers", "generators"]
# The label of every role (a field of `report.tokenizers` / `report.generators`) in figure legends.
LABELS: dict[Family, dict[str, str]] = {
    "tokenizers": {
        "semtok": "SemTok $2^{18}$",
        "semtok_b32": "SemTok $2^{32}$",
        "lfq": "LFQ",
        "no_contrastive": "w/o contrastive",
        "no_distillation": "w/o distillation",
        "no_semantics": "1D w/o semantics",
        "raster": "1D raster tokens",
        "grid2d": "2D grid",
        "finetune_only": "fine-tuning only",
        "lpips_only": "LPIPS only",
        "resnet_only": "ResNet only",
    },
    "generators": {
        "ar_l": "AR-L",
        "ar_xl": "AR-XL",
        "ar_xxl": "AR-XXL",
        "groups2": "AR-L, 2 groups",
        "no_contrastive": "AR-L, w/o contrastive",
        "no_distillation": "AR-L, w/o distillation",
        "no_semantics": "AR-L, 1D w/o semantics",
        "raster": "1D tokens (raster)",
        "grid2d": "AR-L, 2D grid",
    },
}


class MissingInput(FileNotFoundError):
    """An input of a table or figure does not exist; the message names it and what produces it."""


def family(kind: str) -> Family:
    """The roles an input kind names: tokenizers for reconstructions, generators for samples."""
    return "generators" if kind in ("gen", "samples") else "tokenizers"


def bound(report: ReportConfig, kind: str, run: tuple[str, str]) -> tuple[str, str]:
    """(variant, setting) of a table row's run (role, setting) of input kind `kind` under the config's
    `report` section; a reference run (validation images, frozen VAE) as it is."""
    if run in REFERENCE_RULES:
        return run
    role, setting = run
    return getattr(getattr(report, family(kind)), role), setting


def variant(cfg: Config, fam: Family, role: str, target: str) -> str:
    """The variant bound to `role`; a ConfigError naming the role's key when the config lacks it."""
    name = getattr(getattr(cfg.report, fam), role)
    section = f"{fam[:-1]}_variants"
    if name not in getattr(cfg, section):
        raise ConfigError(f"{target} needs report.{fam}.{role} = {name!r}, which {section} does not define")
    return name


def label(cfg: Config, need: Input) -> str:
    """The label of the role `need`'s variant plays (its first role in `LABELS` order), else its name."""
    fam = family(need.kind)
    roles = getattr(cfg.report, fam)
    for role, text in LABELS[fam].items():
        if getattr(roles, role) == need.variant:
            return text
    return need.variant


# ----------------------------------------------------------------------------------------------
# Inputs of tables and figures


@dataclass(frozen=True)
class Input:
    """One file a table or figure reads.

    kind: recon    metrics/recon/{variant}-{setting}.csv      (setting = mode: refiner | diffusion)
          gen      metrics/gen/{variant}-{setting}.csv        (setting = sampling setting)
          examples metrics/recon/{variant}-{setting}.examples.npz
          features metrics/recon/{variant}-features.npz
          samples  samples/{variant}/{setting}.npz
    """

    kind: Literal["recon", "gen", "examples", "features", "samples"]
    variant: str
    setting: str = ""

    def path(self, out: Path) -> Path:
        if self.kind == "recon":
            return P.recon_metrics(out, self.variant, self.setting)
        if self.kind == "gen":
            return P.gen_metrics(out, self.variant, self.setting)
        if self.kind == "examples":
            return P.recon_examples(out, self.variant, self.setting)
        if self.kind == "features":
            return P.recon_features(out, self.variant)
        return P.sample_file(out, self.variant, self.setting)

    @property
    def rule(self) -> str:
        """The upstream rule that writes this file."""
        if self.kind in ("recon", "examples"):
            run = (self.variant, self.setting)
            if run in REFERENCE_RULES:
                return REFERENCE_RULES[run]
            if self.setting == "diffusion":
                return "eval_recon_diffusion"
        return {"gen": "eval_gen", "samples": "sample"}.get(self.kind, "eval_recon")

    @property
    def reference(self) -> bool:
        """The validation images' or the frozen VAE's row, not a tokenizer's."""
        return self.kind in ("recon", "examples") and (self.variant, self.setting) in REFERENCE_RULES

    @property
    def generator(self) -> bool:
        return self.kind in ("gen", "samples")


@dataclass(frozen=True)
class PaperPoint:
    """A point the paper gives on one of its sweep figures: the swept value `x` of its own sampling
    setting and the row of one of its tables that reports the metrics there (the figures themselves
    exist only as pictures). Drawn only when the sweep generator plays `role`."""

    x: float
    table: str
    row: str  # the row's label in reported.TABLES[table]
    role: str = "ar_l"  # the generator role the paper measured

    @property
    def source(self) -> Row:
        for row in TABLES[self.table].rows:
            if row.label == self.row:
                return row
        raise KeyError(f"{self.table} has no row {self.row!r}")


# SemTok-AR-L in Table 2 is sampled with the paper's defaults (§4.1, Appendix A): 64 steps, random
# order, per-bit top-p 0.75, linear CFG up to 6.0. The paper reports no number for the constant schedule.
_AR_L = ("table2", "SemTok-AR-L (Ours)")


@dataclass(frozen=True)
class Figure:
    """A figure target: `draw` names the function of figures.py that draws it.

    runs: the (role, recon mode or sampling setting) pairs it shows, in order (not for sweeps); roles
        of tokenizers for recon_grid and tsne, of generators for sample_grid and progressive.
    sweep: the `evaluation.sweeps` key it plots (sweep figures).
    paper: the paper's points on a sweep figure.
    images: images a row (recon_grid, progressive) or classes (sample_grid); 0 = all.
    """

    name: str
    draw: Literal["recon_grid", "sample_grid", "progressive", "tsne", "sweep"]
    caption: str
    runs: tuple[tuple[str, str], ...] = ()
    sweep: str = ""
    paper: tuple[PaperPoint, ...] = ()
    images: int = 0
    per_class: int = 1  # sample_grid

    @property
    def names_classes(self) -> bool:
        """Whether it names classes (sample grids' columns, the t-SNE's legend): it reads the train index."""
        return self.draw in ("sample_grid", "tsne")


_TOKENIZERS = tuple((role, "refiner") for role in ("grid2d", "no_semantics", "semtok", "semtok_b32"))

FIGURES: dict[str, Figure] = {
    f.name: f
    for f in (
        Figure(
            "fig3",
            "recon_grid",
            "Comparison of reconstructions from different tokenizers: the 2D-grid baseline, 1D without "
            "semantics, SemTok 2^18 and 2^32 (one-step refiner).",
            _TOKENIZERS,
            images=4,
        ),
        Figure(
            "fig11",
            "recon_grid",
            "Comparison of reconstructions from different tokenizers (all grid images).",
            _TOKENIZERS,
        ),
        Figure(
            "table7",
            "recon_grid",
            "Reconstructions of the diffusion sampler (Stage I, Euler steps) and the one-step refiner "
            "(Stage II), SemTok 2^18.",
            (("semtok", "diffusion"), ("semtok", "refiner")),
        ),
        Figure(
            "fig4",
            "sample_grid",
            "Generation results with different tokenizers (AR-L on the 2D-grid, 1D without semantics "
            "and SemTok tokenizers), a few samples per class.",
            tuple((role, MAIN) for role in ("grid2d", "no_semantics", "ar_l")),
            images=4,
            per_class=2,
        ),
        Figure(
            "fig12",
            "sample_grid",
            "Generated images of the SemTok-based AR models (L, XL, XXL) across classes.",
            tuple((role, MAIN) for role in ("ar_l", "ar_xl", "ar_xxl")),
            images=8,
            per_class=2,
        ),
        Figure(
            "fig5",
            "progressive",
            "Progressive generation in raster scan order: 1D tokens (raster generator) vs 2D tokens "
            "(2D-grid generator); columns show the images decoded from the tokens known after chosen steps.",
            (("raster", PROGRESSIVE), ("grid2d", PROGRESSIVE)),
            images=2,
        ),
        Figure(
            "fig6",
            "tsne",
            "Feature clustering with different semantic constraints: t-SNE of mean-pooled encoder "
            "features (stream B, before the projection to d), coloured by class.",
            tuple((role, "") for role in ("semtok", "no_contrastive", "no_distillation", "no_semantics")),
        ),
        Figure(
            "fig7",
            "sweep",
            "The influence of the CFG scale under the linear schedule.",
            sweep="cfg_linear",
            paper=(PaperPoint(6.0, *_AR_L),),
        ),
        Figure(
            "fig8",
            "sweep",
            "The influence of the CFG scale under the constant schedule.",
            sweep="cfg_constant",
        ),
        Figure(
            "fig9",
            "sweep",
            "Ablation on the sampling steps for token generation.",
            sweep="steps",
            paper=(PaperPoint(64, *_AR_L),),
        ),
        Figure(
            "fig10",
            "sweep",
            "Ablation on the top-p filtering for token generation.",
            sweep="top_p",
            paper=(PaperPoint(0.75, *_AR_L),),
        ),
    )
}

_FIGURE_INPUT = {
    "recon_grid": "examples",
    "sample_grid": "samples",
    "progressive": "samples",
    "tsne": "features",
}


def _checked(cfg: Config, target: str, needs: list[Input]) -> list[Input]:
    """`needs` once each, after checking that every variant exists and every setting parses."""
    for name, _ in REFERENCE_RULES:
        if name in cfg.tokenizer_variants:
            raise ConfigError(
                f"tokenizer_variants.{name}: the name is reserved for a reference row of the metrics"
            )
    for need in needs:
        if need.reference:
            continue
        section = "generator_variants" if need.generator else "tokenizer_variants"
        if need.variant not in getattr(cfg, section):
            raise ConfigError(f"{target} needs {section}.{need.variant}, which the config does not define")
        if need.generator:
            parse_setting(need.setting)
    return list(dict.fromkeys(needs))


def row_needs(cfg: Config, table: PaperTable) -> list[Input | None]:
    """Per row and kind ("recon", "gen") of `table`, the CSV that row reads (None where it has no such
    run), with roles resolved to the config's variants: 2 entries a row."""
    out: list[Input | None] = []
    for row in table.rows:
        for kind in ("recon", "gen"):
            run = row.run(kind)
            if run is not None and run not in REFERENCE_RULES:
                variant(cfg, family(kind), run[0], table.name)  # names the role when its variant is missing
            out.append(None if run is None else Input(kind, *bound(cfg.report, kind, run)))
    return out


def learning_needs(cfg: Config) -> list[Input]:
    """The metric CSVs of the learning table: the validation images and the frozen VAE; every
    tokenizer variant's refiner and, where it has its own Stage I, flow decoding; every generator's
    main samples; the CFG sweeps (linear and constant) of the sweep generator."""
    needs = [Input("recon", *ORIGINAL), Input("recon", *VAE)]
    for tok in cfg.tokenizer_variants:
        needs.append(Input("recon", tok, "refiner"))
        if cfg.stage1_source(tok) == tok:
            needs.append(Input("recon", tok, "diffusion"))
    needs += [Input("gen", gen, MAIN) for gen in cfg.generator_variants]
    sweeps = sweep_settings(cfg)
    generator = cfg.evaluation.sweeps.generator
    needs += [Input("gen", generator, s) for key in ("cfg_linear", "cfg_constant") for s in sweeps[key]]
    return _checked(cfg, LEARNING, needs)


def pick_needs(cfg: Config, pick: Pick) -> list[Input]:
    """The runs a claim's term reads (semtok.report.findings.Pick): one table-row run, or the settings
    of a sweep of the sweep generator that `pick.which` names (in sweep order; none where the sweep
    has no such setting)."""
    if pick.run is not None:
        if pick.run not in REFERENCE_RULES:
            variant(cfg, family(pick.kind), pick.run[0], CLAIMS)
        return [Input(pick.kind, *bound(cfg.report, pick.kind, pick.run))]
    generator = cfg.evaluation.sweeps.generator
    values = list(getattr(cfg.evaluation.sweeps, pick.sweep))
    own = getattr(sample_config(cfg, generator, MAIN), SWEEPS[pick.sweep].field)
    chosen = {
        "first": values[:1],
        "last": values[-1:],
        "main": [v for v in values if v == own],
        "others": [v for v in values if v != own],
        "interior": values[1:-1],
        "ends": [values[0], values[-1]] if len(values) > 1 else values,
        "all": values,
    }[pick.which]
    return [Input("gen", generator, setting_name(pick.sweep, v)) for v in dict.fromkeys(chosen)]


def replicas(cfg: Config) -> dict[Family, list[str]]:
    """The main variant and its seed replicas (`report.claims`) of each family: tokenizers (role
    semtok) and generators (role ar_l). A replica must equal its main variant but for `seed_offset`
    (and, for a generator, its tokenizer: the main tokenizer or one of its replicas), with an offset
    of its own; a ConfigError names the key otherwise."""
    claims = cfg.report.claims
    out: dict[Family, list[str]] = {}
    for fam, role, names in (
        ("tokenizers", "semtok", claims.tokenizer_replicas),
        ("generators", "ar_l", claims.generator_replicas),
    ):
        main = variant(cfg, fam, role, CLAIMS)
        section = f"{fam[:-1]}_variants"
        get = cfg.tokenizer_variant if fam == "tokenizers" else cfg.generator_variant
        key = f"report.claims.{fam[:-1]}_replicas"
        base = dataclasses.asdict(get(main))
        offsets = {base.pop("seed_offset")}
        if fam == "generators":
            tokenizers = out["tokenizers"]
            base.pop("tokenizer")
        for name in names:
            if name not in getattr(cfg, section):
                raise ConfigError(f"{key}: {name!r} is not in {section}")
            replica = dataclasses.asdict(get(name))
            offset = replica.pop("seed_offset")
            if fam == "generators" and replica.pop("tokenizer") not in tokenizers:
                raise ConfigError(
                    f"{key}: {name!r} must model the tokenizer {tokenizers[0]!r} or one of its replicas"
                )
            if replica != base:
                differ = sorted(k for k in base if base[k] != replica.get(k))
                raise ConfigError(
                    f"{key}: {name!r} differs from {main!r} in {differ}; a seed replica differs only in seed_offset"
                )
            if offset in offsets:
                raise ConfigError(
                    f"{key}: {name!r} repeats seed_offset {offset} of another replica or of {main!r}"
                )
            offsets.add(offset)
        out[fam] = [main, *dict.fromkeys(names)]
    return out


def replica_needs(cfg: Config) -> list[Input]:
    """The runs whose seed-to-seed spread is the claims' noise: the refiner reconstructions of the
    main tokenizer and its replicas, the main samples of the main generator and its replicas."""
    runs = replicas(cfg)
    return [Input("recon", v, "refiner") for v in runs["tokenizers"]] + [
        Input("gen", v, MAIN) for v in runs["generators"]
    ]


def claims_needs(cfg: Config) -> list[Input]:
    """Every metric CSV of the claims table: each claim's runs, then the seed replicas."""
    needs = [n for claim in FINDINGS for term in claim.terms for n in pick_needs(cfg, term.pick)]
    return _checked(cfg, CLAIMS, needs + replica_needs(cfg))


def table_needs(cfg: Config, name: str) -> list[Input]:
    """The metric CSVs of table `name` (a paper table, "learning" or "claims"), in row order (each once)."""
    if name == LEARNING:
        return learning_needs(cfg)
    if name == CLAIMS:
        return claims_needs(cfg)
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join([*TABLES, LEARNING, CLAIMS])}")
    return _checked(cfg, name, [need for need in row_needs(cfg, TABLES[name]) if need is not None])


def figure_needs(cfg: Config, name: str) -> list[Input]:
    """The files figure `name` reads, in the order it shows them."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    fig = FIGURES[name]
    if fig.draw == "sweep":
        generator = cfg.evaluation.sweeps.generator
        return _checked(cfg, name, [Input("gen", generator, s) for s in sweep_settings(cfg)[fig.sweep]])
    kind = _FIGURE_INPUT[fig.draw]
    needs = [Input(kind, variant(cfg, family(kind), role, name), setting) for role, setting in fig.runs]
    return _checked(cfg, name, needs)


# ----------------------------------------------------------------------------------------------
# The config values each target reads


def run_settings(cfg: Config, need: Input) -> dict[str, Any]:
    """What a table prints about one of its runs: a tokenizer's token shape, quantizer and resolution;
    a generator's size, head, tokenizer and sampler settings; nothing for a reference run."""
    if need.reference:
        return {}
    if not need.generator:
        tok = cfg.tokenizer_variant(need.variant)
        return {
            "quantizer": tok.quantizer,
            "bits": tok.bits,
            "num_tokens": tok.num_tokens,
            "resolution": cfg.data.resolution,
        }
    gen = cfg.generator_variant(need.variant)
    return {
        "size": gen.arch.size,
        "dims": gen.sizes[gen.arch.size],
        "head": gen.arch.head,
        "tokenizer": gen.tokenizer,
        "sample": dataclasses.asdict(sample_config(cfg, need.variant, need.setting)),
    }


def training_images(cfg: Config, variant: str) -> tuple[int, int]:
    """The images tokenizer `variant`'s training saw, (Stage I, Stage II), each steps × global batch;
    its Stage I is that of its source (`stage1.from_variant`), 0 without one (Table 12's fine-tuning
    only)."""
    stage2 = cfg.tokenizer_variant(variant).stage2.optim
    source = cfg.stage1_source(variant)
    if source is None:
        return 0, stage2.steps * stage2.batch_size
    stage1 = cfg.tokenizer_variant(source).stage1.optim
    return stage1.steps * stage1.batch_size, stage2.steps * stage2.batch_size


def budgets(cfg: Config, needs: list[Input]) -> dict[str, tuple[int, int]]:
    """`training_images` of every tokenizer run among `needs`."""
    return {
        n.variant: training_images(cfg, n.variant) for n in needs if n.kind == "recon" and not n.reference
    }


def target_settings(cfg: Config, name: str) -> dict[str, Any]:
    """Every config value table or figure `name` reads, besides its input files: its runs (by variant
    and setting) and what it prints about them; the sweep values and the generator's own setting of a
    sweep figure (and of the claims table); the seed of the t-SNE; the run id a table prints; the claims
    table's settings, replicas and training budgets. The learning table also reads the
    class count from the train index, a file."""
    if name in FIGURES:
        fig = FIGURES[name]
        needs = figure_needs(cfg, name)
        out: dict[str, Any] = {"runs": [(n.kind, n.variant, n.setting, label(cfg, n)) for n in needs]}
        if fig.draw == "sweep":
            out["config"] = dataclasses.asdict(sample_config(cfg, cfg.evaluation.sweeps.generator, MAIN))
        if fig.draw == "tsne":
            out["seed"] = cfg.seed
        return out
    needs = table_needs(cfg, name)
    out = {"run_id": cfg.run_id, "runs": [(n.kind, n.variant, n.setting) for n in needs]}
    if name == LEARNING:
        flows = [n.variant for n in needs if n.setting == "diffusion"]
        out["flow_steps"] = {tok: cfg.tokenizer_variant(tok).sampler.steps for tok in flows}
    elif name == CLAIMS:
        out["claims"] = dataclasses.asdict(cfg.report.claims)
        out["replicas"] = replicas(cfg)
        out["budget"] = budgets(cfg, needs)
        out["sample"] = dataclasses.asdict(sample_config(cfg, cfg.evaluation.sweeps.generator, MAIN))
    else:
        out["runs"] = [(*run, run_settings(cfg, need)) for run, need in zip(out["runs"], needs, strict=True)]
        out["notes"] = notes(cfg, TABLES[name])
        if TABLES[name].budget:
            out["budget"] = budgets(cfg, needs)
    return out


def target_hash(cfg: Config, name: str) -> str:
    """The hash of `target_settings`: the params of the target's rule and the hash its table prints."""
    return section_hash(target_settings(cfg, name))


def notes(cfg: Config, table: PaperTable) -> list[str]:
    """The notes of `table`, each role ("{tokenizers.no_semantics}") written as the variant the config
    binds to it."""
    roles = {"tokenizers": cfg.report.tokenizers, "generators": cfg.report.generators}
    return [note.format(**roles) for note in table.notes]


def table_inputs(cfg: Config, name: str) -> list[Path]:
    return [n.path(cfg.out) for n in table_needs(cfg, name)]


def figure_inputs(cfg: Config, name: str) -> list[Path]:
    """The files figure `name` reads: `figure_needs`, and the train index where it names classes."""
    index = [P.index_file(cfg.out, "train")] if FIGURES[name].names_classes else []
    return [n.path(cfg.out) for n in figure_needs(cfg, name)] + index


def all_needs(cfg: Config) -> list[Input]:
    needs = [n for t in [*TABLES, LEARNING, CLAIMS] for n in table_needs(cfg, t)] + [
        n for f in FIGURES for n in figure_needs(cfg, f)
    ]
    return list(dict.fromkeys(needs))


def generator_settings(cfg: Config) -> dict[str, list[str]]:
    """Every (generator variant → sampling settings) the report reads samples or metrics of."""
    out: dict[str, list[str]] = {}
    for need in all_needs(cfg):
        if need.generator and need.setting not in out.setdefault(need.variant, []):
            out[need.variant].append(need.setting)
    return out


def tokenizer_modes(cfg: Config) -> dict[str, list[str]]:
    """Every (tokenizer variant → recon modes) the report reads; "features" marks a features npz."""
    out: dict[str, list[str]] = {}
    for need in all_needs(cfg):
        mode = "features" if need.kind == "features" else need.setting
        if not need.generator and not need.reference and mode not in out.setdefault(need.variant, []):
            out[need.variant].append(mode)
    return out


def require(needs: list[Input], out: Path, target: str) -> list[Path]:
    """The paths of `needs`; fails with a message naming each missing one and the rule that writes it."""
    paths = [n.path(out) for n in needs]
    missing = [(p, n) for p, n in zip(paths, needs, strict=True) if not p.exists()]
    if missing:
        lines = [f"  {p}  (written by rule {n.rule}: `snakemake {p}`)" for p, n in missing]
        raise MissingInput(f"{target}: missing input(s):\n" + "\n".join(lines))
    return paths
