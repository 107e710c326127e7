"""What the report needs from the rest of the DAG, derived from the config in one place.

Sampling settings name one way of sampling a generator variant; they appear in file names
(`samples/{variant}/{setting}.npz`, `metrics/gen/{variant}-{setting}.csv`):

    main                 the variant's own `sample` config
    order-confidence     confidence order (Table 14); `order-random` is accepted too
    cfg-linear-{s}       linear CFG schedule with maximum scale s (Fig. 7), e.g. cfg-linear-3.0
    cfg-constant-{s}     constant CFG scale s (Fig. 8)
    steps-{n}            n sampling steps (Fig. 9), e.g. steps-16
    topp-{p}             per-bit top-p (Fig. 10), e.g. topp-0.75
    progressive          raster-order decoding with the partial images recorded (Fig. 5)

Sweep values come from `evaluation.sweeps` and are written with `format_value` (floats as
`str(float)`, ints as `str(int)`), so that a setting name has exactly one spelling.

The rules (workflow/rules/report.smk) and the builders (tables.py, learning.py, figures.py) all take
their input lists from `table_inputs` and `figure_inputs` (table "learning": `learning_needs`);
upstream rules can enumerate what to sample and evaluate with `generator_settings` and
`tokenizer_modes`. Two recon rows are not tokenizers: the validation images (`original-val`, rule
eval_reference) and the frozen VAE (`vae-frozen`, rule eval_vae).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from semtok import paths as P
from semtok.config import Config, ConfigError, SampleConfig
from semtok.eval.records import ORIGINAL, VAE
from semtok.report.reported import TABLES

MAIN = "main"
PROGRESSIVE = "progressive"
LEARNING = "learning"
LEARNING_CAPTION = (
    "Learning evidence: a frozen classifier's accuracy (class_acc) on the validation images, on "
    "reconstructions (true labels) and on samples (requested labels), with reconstruction PSNR."
)
REFERENCE_RULES = {ORIGINAL: "eval_reference", VAE: "eval_vae"}  # recon rows that are not tokenizers


class SettingError(ValueError):
    """A sampling-setting name that does not parse; the message lists the valid forms."""


class MissingInput(FileNotFoundError):
    """An input of a table or figure does not exist; the message names it and what produces it."""


@dataclass(frozen=True)
class Sweep:
    """One sampling sweep: `evaluation.sweeps.<key>` values → settings `{prefix}-{value}`."""

    key: str  # field of SweepConfig
    prefix: str
    field: str  # the SampleConfig field that varies
    label: str  # axis label
    number: type = float
    fixed: tuple[tuple[str, Any], ...] = ()  # SampleConfig fields the sweep also sets


SWEEPS: dict[str, Sweep] = {
    s.key: s
    for s in (
        Sweep(
            "cfg_linear",
            "cfg-linear",
            "cfg_scale",
            "CFG scale (linear schedule)",
            fixed=(("cfg_schedule", "linear"),),
        ),
        Sweep(
            "cfg_constant",
            "cfg-constant",
            "cfg_scale",
            "CFG scale (constant)",
            fixed=(("cfg_schedule", "constant"),),
        ),
        Sweep("steps", "steps", "steps", "sampling steps", number=int),
        Sweep("top_p", "topp", "top_p", "top-p"),
    )
}
ORDERS = ("random", "confidence")
FORMS = "main, progressive, order-{random,confidence}, " + ", ".join(
    f"{s.prefix}-<{s.number.__name__}>" for s in SWEEPS.values()
)


def format_value(value: float | int) -> str:
    """The one spelling of a sweep value in a setting name: 3.0 → "3.0", 16 → "16", 0.75 → "0.75"."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(f"sweep value {value!r}: expected a number")
    return str(value)


def setting_name(sweep: str, value: float | int) -> str:
    """setting_name("cfg_linear", 3.0) → "cfg-linear-3.0"."""
    s = SWEEPS[sweep]
    return f"{s.prefix}-{format_value(s.number(value))}"


def parse_setting(setting: str) -> tuple[Sweep | None, float | int | None]:
    """The sweep a setting belongs to and its value; (None, None) for main/progressive/order-*."""
    if setting in (MAIN, PROGRESSIVE) or setting in (f"order-{o}" for o in ORDERS):
        return None, None
    for sweep in SWEEPS.values():
        if not setting.startswith(sweep.prefix + "-"):
            continue
        text = setting[len(sweep.prefix) + 1 :]
        try:
            value = sweep.number(text)
        except ValueError:
            kind = "an integer" if sweep.number is int else "a number"
            raise SettingError(f"sampling setting {setting!r}: {text!r} is not {kind}") from None
        if not math.isfinite(value):
            raise SettingError(f"sampling setting {setting!r}: {text!r} is not finite")
        if setting_name(sweep.key, value) != setting:
            raise SettingError(
                f"sampling setting {setting!r}: write it as {setting_name(sweep.key, value)!r}"
            )
        return sweep, value
    raise SettingError(f"unknown sampling setting {setting!r}; valid forms: {FORMS}")


def setting_overrides(setting: str) -> dict[str, Any]:
    """The `generator.sample` fields a setting changes, e.g. "cfg-linear-3.0" →
    {"cfg_schedule": "linear", "cfg_scale": 3.0}, "steps-16" → {"steps": 16}, "main" → {}.

    "progressive" changes no field: it is the variant's own sample config, decoded in raster order
    with the partial images recorded (the sampler's progressive mode, contract: `partial`, `steps`,
    `fraction` in the npz).
    """
    sweep, value = parse_setting(setting)
    if sweep is not None:
        return {**dict(sweep.fixed), sweep.field: value}
    if setting.startswith("order-"):
        return {"order": setting.removeprefix("order-")}
    return {}


def sample_config(cfg: Config, variant: str, setting: str) -> SampleConfig:
    """The sample config of generator `variant` under `setting`."""
    return dataclasses.replace(cfg.generator_variant(variant).sample, **setting_overrides(setting))


def sweep_settings(cfg: Config) -> dict[str, list[str]]:
    """{"cfg_linear": ["cfg-linear-1.0", ...], "cfg_constant": [...], "steps": [...], "top_p": [...]}
    for the sweep generator `evaluation.sweeps.generator`."""
    sweeps = cfg.evaluation.sweeps
    return {key: [setting_name(key, v) for v in getattr(sweeps, key)] for key in SWEEPS}


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
class Figure:
    """A figure target: `draw` names the function of figures.py that draws it.

    runs: the (variant, recon mode or sampling setting) pairs it shows, in order (not for sweeps).
    sweep: the `evaluation.sweeps` key it plots (sweep figures).
    images: images a row (recon_grid, progressive) or classes (sample_grid); 0 = all.
    """

    name: str
    draw: Literal["recon_grid", "sample_grid", "progressive", "tsne", "sweep"]
    caption: str
    runs: tuple[tuple[str, str], ...] = ()
    sweep: str = ""
    images: int = 0
    per_class: int = 1  # sample_grid


_TOKENIZERS = tuple((v, "refiner") for v in ("grid2d", "no-sem", "b18", "b32"))

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
            (("b18", "diffusion"), ("b18", "refiner")),
        ),
        Figure(
            "fig4",
            "sample_grid",
            "Generation results with different tokenizers (AR-L on the 2D-grid, 1D without semantics "
            "and SemTok tokenizers), a few samples per class.",
            tuple((v, MAIN) for v in ("ar-l-grid2d", "ar-l-no-sem", "ar-l")),
            images=4,
            per_class=2,
        ),
        Figure(
            "fig12",
            "sample_grid",
            "Generated images of the SemTok-based AR models (L, XL, XXL) across classes.",
            tuple((v, MAIN) for v in ("ar-l", "ar-xl", "ar-xxl")),
            images=8,
            per_class=2,
        ),
        Figure(
            "fig5",
            "progressive",
            "Progressive generation in raster scan order: 1D tokens (ar-l-raster) vs 2D tokens "
            "(ar-l-grid2d); columns show the images decoded from the tokens known after chosen steps.",
            (("ar-l-raster", PROGRESSIVE), ("ar-l-grid2d", PROGRESSIVE)),
            images=2,
        ),
        Figure(
            "fig6",
            "tsne",
            "Feature clustering with different semantic constraints: t-SNE of mean-pooled encoder "
            "features (stream B, before the projection to d), coloured by class.",
            tuple((v, "") for v in ("b18", "no-contra", "no-distill", "no-sem")),
        ),
        Figure(
            "fig7", "sweep", "The influence of the CFG scale under the linear schedule.", sweep="cfg_linear"
        ),
        Figure(
            "fig8",
            "sweep",
            "The influence of the CFG scale under the constant schedule.",
            sweep="cfg_constant",
        ),
        Figure("fig9", "sweep", "Ablation on the sampling steps for token generation.", sweep="steps"),
        Figure("fig10", "sweep", "Ablation on the top-p filtering for token generation.", sweep="top_p"),
    )
}

_FIGURE_INPUT = {
    "recon_grid": "examples",
    "sample_grid": "samples",
    "progressive": "samples",
    "tsne": "features",
}


def _check_variants(cfg: Config, target: str, needs: list[Input]) -> list[Input]:
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
    return _check_variants(cfg, LEARNING, needs)


def table_needs(cfg: Config, name: str) -> list[Input]:
    """The metric CSVs of table `name` (a paper table or "learning"), in row order (each once)."""
    if name == LEARNING:
        return learning_needs(cfg)
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; known: {', '.join([*TABLES, LEARNING])}")
    needs: list[Input] = []
    for row in TABLES[name].rows:
        needs += [Input(kind, *row.run(kind)) for kind in ("recon", "gen") if row.run(kind) is not None]
    return _check_variants(cfg, name, needs)


def figure_needs(cfg: Config, name: str) -> list[Input]:
    """The files figure `name` reads, in the order it shows them."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    fig = FIGURES[name]
    if fig.draw == "sweep":
        generator = cfg.evaluation.sweeps.generator
        return _check_variants(
            cfg, name, [Input("gen", generator, s) for s in sweep_settings(cfg)[fig.sweep]]
        )
    return _check_variants(cfg, name, [Input(_FIGURE_INPUT[fig.draw], v, s) for v, s in fig.runs])


def table_inputs(cfg: Config, name: str) -> list[Path]:
    return [n.path(cfg.out) for n in table_needs(cfg, name)]


def figure_inputs(cfg: Config, name: str) -> list[Path]:
    return [n.path(cfg.out) for n in figure_needs(cfg, name)]


def all_needs(cfg: Config) -> list[Input]:
    needs = [n for t in [*TABLES, LEARNING] for n in table_needs(cfg, t)] + [
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
