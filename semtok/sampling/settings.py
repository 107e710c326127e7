"""Sampling settings: the names of the ways a generator variant is sampled, and the sampler arguments
each name stands for. Names appear in file names (`samples/{variant}/{setting}.npz`,
`metrics/gen/{variant}-{setting}.csv`):

    main                 the variant's own `sample` config
    order-confidence     confidence order (Table 14); `order-random` is accepted too
    cfg-linear-{s}       linear CFG schedule with maximum scale s (Fig. 7), e.g. cfg-linear-3.0
    cfg-constant-{s}     constant CFG scale s (Fig. 8)
    steps-{n}            n sampling steps (Fig. 9), e.g. steps-16
    topp-{p}             per-bit top-p (Fig. 10), e.g. topp-0.75
    progressive          raster-order decoding with the partial images recorded (Fig. 5)

Sweep values come from `evaluation.sweeps` and are written with `format_value` (floats as
`str(float)`, ints as `str(int)`), so that a setting name has exactly one spelling. The sampling job
(semtok/jobs/generator.py) and the report (semtok/report/) both read settings from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from semtok.config import Config, SampleConfig

MAIN = "main"
PROGRESSIVE = "progressive"


class SettingError(ValueError):
    """A sampling-setting name that does not parse; the message lists the valid forms."""


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


def same_as_main(cfg: Config, variant: str, setting: str) -> bool:
    """Whether `setting` draws exactly the samples of the variant's "main" setting: a sweep point (or
    an order) that repeats the main sample config, e.g. cfg-linear-3.0 when the main CFG is linear at
    3.0. The seeds depend on the variant and the batch only, so the images are the same, and the
    workflow copies main's samples instead of drawing them again (at the paper's scale, 50,000
    images a setting)."""
    if setting in (MAIN, PROGRESSIVE):
        return False
    return sample_config(cfg, variant, setting) == sample_config(cfg, variant, MAIN)


def sweep_settings(cfg: Config) -> dict[str, list[str]]:
    """{"cfg_linear": ["cfg-linear-1.0", ...], "cfg_constant": [...], "steps": [...], "top_p": [...]}
    for the sweep generator `evaluation.sweeps.generator`."""
    sweeps = cfg.evaluation.sweeps
    return {key: [setting_name(key, v) for v in getattr(sweeps, key)] for key in SWEEPS}


def sampler_kwargs(sc: SampleConfig) -> dict[str, Any]:
    """The arguments of `semtok.sampling.masked.sample` (and of the generation pipeline) that a sample
    config sets: steps, order, top_p, cfg_scale, cfg_schedule, temperature, choice_temperature."""
    fields = ("steps", "order", "top_p", "cfg_scale", "cfg_schedule", "temperature", "choice_temperature")
    return {name: getattr(sc, name) for name in fields}
