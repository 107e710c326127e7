import dataclasses

import pytest

from semtok.config import ConfigError
from semtok.report import settings as S
from semtok.report.reported import TABLES


@pytest.mark.parametrize(
    ("setting", "overrides"),
    [
        ("main", {}),
        ("progressive", {}),
        ("order-confidence", {"order": "confidence"}),
        ("cfg-linear-3.0", {"cfg_schedule": "linear", "cfg_scale": 3.0}),
        ("cfg-constant-1.5", {"cfg_schedule": "constant", "cfg_scale": 1.5}),
        ("steps-16", {"steps": 16}),
        ("topp-0.75", {"top_p": 0.75}),
    ],
)
def test_setting_overrides(setting, overrides):
    got = S.setting_overrides(setting)
    assert got == overrides
    assert [type(v) for v in got.values()] == [type(v) for v in overrides.values()]


@pytest.mark.parametrize(
    ("sweep", "value"),
    [(k, v) for k in ("cfg_linear", "cfg_constant", "top_p") for v in (1, 2.5, 0.75, 3.0)]
    + [("steps", v) for v in (2, 16, 128)],
)
def test_setting_name_round_trip(sweep, value):
    s = S.SWEEPS[sweep]
    name = S.setting_name(sweep, value)
    parsed, got = S.parse_setting(name)
    assert parsed is s and got == value and type(got) is s.number
    assert S.setting_overrides(name)[s.field] == value


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("cfg-linear-3", "write it as 'cfg-linear-3.0'"),
        ("steps-16.0", "is not an integer"),
        ("topp-abc", "is not a number"),
        ("order-raster", "unknown sampling setting"),
        ("topp-nan", "not finite"),
        ("cfg-3.0", "valid forms"),
    ],
)
def test_parse_errors_are_clear(bad, message):
    with pytest.raises(S.SettingError, match=message):
        S.setting_overrides(bad)


def test_format_value_rejects_non_numbers():
    assert S.format_value(3.0) == "3.0" and S.format_value(16) == "16" and S.format_value(0.75) == "0.75"
    with pytest.raises(S.SettingError):
        S.format_value("3.0")


def test_sample_config_applies_the_setting(cfg):
    base = cfg.generator_variant("ar-l").sample
    got = S.sample_config(cfg, "ar-l", "cfg-constant-2.0")
    assert got == dataclasses.replace(base, cfg_schedule="constant", cfg_scale=2.0)
    assert S.sample_config(cfg, "ar-l", "main") == base


def test_sweep_settings_follow_the_config(cfg):
    sweeps = S.sweep_settings(cfg)
    assert sweeps["cfg_linear"] == [f"cfg-linear-{v}" for v in cfg.evaluation.sweeps.cfg_linear]
    assert sweeps["steps"] == [f"steps-{v}" for v in cfg.evaluation.sweeps.steps]
    changed = dataclasses.replace(cfg.evaluation.sweeps, top_p=[0.3])
    cfg2 = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, sweeps=changed))
    assert S.sweep_settings(cfg2)["top_p"] == ["topp-0.3"]
    assert S.figure_inputs(cfg2, "fig10") == [cfg.out / "metrics" / "gen" / "ar-l-topp-0.3.csv"]


def test_generator_settings_cover_tables_sweeps_and_figures(cfg):
    gens = S.generator_settings(cfg)
    sweep = cfg.evaluation.sweeps.generator
    every_sweep = [s for names in S.sweep_settings(cfg).values() for s in names]
    assert set(every_sweep) | {"main", "order-confidence"} <= set(gens[sweep])
    assert "progressive" in gens["ar-l-raster"] and "progressive" in gens["ar-l-grid2d"]
    table_gens = {row.gen[0] for t in TABLES.values() for row in t.rows if row.gen}
    assert table_gens <= set(gens) and set(gens) <= set(cfg.generator_variants)
    modes = S.tokenizer_modes(cfg)
    assert modes["b18"] == ["refiner", "diffusion", "features"] and "features" in modes["no-sem"]


def test_table_inputs_are_the_paths_module_paths(cfg):
    out = cfg.out
    assert S.table_inputs(cfg, "table4") == [
        out / "metrics/recon/no-sem-refiner.csv",
        out / "metrics/gen/ar-l-no-sem-main.csv",
        out / "metrics/recon/no-distill-refiner.csv",
        out / "metrics/gen/ar-l-no-distill-main.csv",
        out / "metrics/recon/no-contra-refiner.csv",
        out / "metrics/gen/ar-l-no-contra-main.csv",
        out / "metrics/recon/b18-refiner.csv",
        out / "metrics/gen/ar-l-main.csv",
    ]
    assert S.figure_inputs(cfg, "table7") == [
        out / "metrics/recon/b18-diffusion.examples.npz",
        out / "metrics/recon/b18-refiner.examples.npz",
    ]
    assert S.figure_inputs(cfg, "fig6")[0] == out / "metrics/recon/b18-features.npz"
    assert S.figure_inputs(cfg, "fig5")[0] == out / "samples/ar-l-raster/progressive.npz"


def test_unknown_variant_in_config_is_named(cfg):
    variants = {k: v for k, v in cfg.generator_variants.items() if k != "ar-l-groups2"}
    with pytest.raises(ConfigError, match="table13 needs generator_variants.ar-l-groups2"):
        S.table_inputs(dataclasses.replace(cfg, generator_variants=variants), "table13")
