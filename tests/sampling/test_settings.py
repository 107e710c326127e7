import dataclasses

import numpy as np
import pytest

from semtok.sampling import settings as S


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


def test_sampler_kwargs_are_the_sampling_arguments_of_a_sample_config():
    import inspect

    from semtok.config import SampleConfig
    from semtok.sampling.masked import sample

    kwargs = S.sampler_kwargs(SampleConfig(steps=3, top_p=0.5))
    assert kwargs["steps"] == 3 and kwargs["top_p"] == 0.5
    required = {
        name
        for name, p in inspect.signature(sample).parameters.items()
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    }
    assert set(kwargs) == required


def test_sweep_settings_follow_the_config(cfg):
    sweeps = S.sweep_settings(cfg)
    assert sweeps["cfg_linear"] == [f"cfg-linear-{v}" for v in cfg.evaluation.sweeps.cfg_linear]
    assert sweeps["steps"] == [f"steps-{v}" for v in cfg.evaluation.sweeps.steps]
    changed = dataclasses.replace(cfg.evaluation.sweeps, top_p=[0.3])
    cfg2 = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, sweeps=changed))
    assert S.sweep_settings(cfg2)["top_p"] == ["topp-0.3"]


# -- settings that repeat the main sample config ------------------------------------------------


def test_the_sweep_points_that_repeat_main_are_exactly_those_with_mains_sample_config(tiny, tmp_path):
    cfg = tiny.config(
        tmp_path,
        ["generator.sample.cfg_scale=3.0", "generator.sample.steps=8", "generator.sample.top_p=0.75"],
    )
    assert S.same_as_main(cfg, "ar-l", "cfg-linear-3.0")
    assert S.same_as_main(cfg, "ar-l", "steps-8") and S.same_as_main(cfg, "ar-l", "topp-0.75")
    assert not S.same_as_main(cfg, "ar-l", "main") and not S.same_as_main(cfg, "ar-l", "progressive")
    assert not S.same_as_main(cfg, "ar-l", "cfg-linear-5.0")
    assert not S.same_as_main(cfg, "ar-l", "cfg-constant-3.0")  # same scale, another schedule
    assert not S.same_as_main(cfg, "ar-l", "steps-16") and not S.same_as_main(cfg, "ar-l", "topp-1.0")
    # a variant whose own sample config differs from the sweep point's
    other = tiny.config(tmp_path, ["generator_variants.ar-xl.sample={steps: 16}"])
    assert S.same_as_main(other, "ar-l", "steps-8") and not S.same_as_main(other, "ar-xl", "steps-8")


def test_a_setting_that_repeats_main_copies_mains_samples_and_any_other_is_refused(tiny, tmp_path):
    from semtok.jobs.generator import copy_main

    cfg = tiny.config(tmp_path, ["generator.sample.cfg_scale=3.0", "generator.sample.cfg_schedule=linear"])
    main = tmp_path / "main.npz"
    rng = np.random.default_rng(0)
    np.savez(
        main, arr_0=rng.integers(0, 255, (6, 4, 4, 3), dtype=np.uint8), labels=np.arange(6), seeds=np.ones(6)
    )
    out = tmp_path / "cfg-linear-3.0.npz"
    summary = copy_main(cfg, "ar-l", "cfg-linear-3.0", main, out)
    assert summary["images"] == 6 and out.read_bytes() == main.read_bytes()
    with pytest.raises(SystemExit, match="differs"):
        copy_main(cfg, "ar-l", "cfg-linear-5.0", main, tmp_path / "cfg-linear-5.0.npz")
    assert not (tmp_path / "cfg-linear-5.0.npz").exists()
    with pytest.raises(SystemExit, match="no such file"):
        copy_main(cfg, "ar-l", "cfg-linear-3.0", tmp_path / "missing.npz", tmp_path / "x.npz")
