"""The typed config: validation errors name the key and the expected type; overrides; variants;
the JSON schema stays in sync with the dataclasses."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
import yaml

from semtok.config import Config, ConfigError, SampleConfig, check_argument, from_dict, json_schema, load

ROOT = Path(__file__).resolve().parents[1]


def raw(name: str = "config.yaml") -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_load(name):
    cfg = load(ROOT / "config" / name)
    assert isinstance(cfg, Config)
    assert set(cfg.tokenizer_variants) == {
        "b18",
        "b32",
        "lfq",
        "no-contra",
        "no-distill",
        "no-sem",
        "raster",
        "grid2d",
        "finetune-only",
        "lpips-only",
        "resnet-only",
        "b18-seed1",  # a seed replica of b18 (report.claims)
    } | ({"b18-seed2"} if name == "paper.yaml" else set())
    assert cfg.tokenizer_variant("b32").bits == 32
    assert cfg.tokenizer_variant("raster").encoder.causal_1d
    assert cfg.stage1_source("lpips-only") == "b18" and cfg.stage1_source("finetune-only") is None


def test_paper_config_carries_the_paper_hyperparameters():
    cfg = load(ROOT / "config" / "paper.yaml")
    t, g = cfg.tokenizer, cfg.generator
    assert (t.encoder.depth, t.encoder.width, t.encoder.heads) == (8, 768, 12)
    assert (t.entropy.weight, t.semantic.weight, t.stage2.lambda_p, t.stage2.lambda_g) == (
        0.0025,
        0.05,
        0.1,
        0.1,
    )
    assert (t.stage1.optim.steps, t.stage1.optim.batch_size, t.stage1.optim.lr) == (200_000, 256, 5e-5)
    assert (t.stage2.optim.steps, t.stage2.optim.batch_size, t.stage2.gan.start, t.stage2.gan.lr) == (
        100_000,
        64,
        20_000,
        1e-4,
    )
    assert (g.optim.steps, g.optim.batch_size, g.optim.lr, g.optim.weight_decay) == (
        800_000,
        2048,
        2e-4,
        0.03,
    )
    assert (g.sample.steps, g.sample.top_p, g.label_smoothing, g.class_dropout) == (64, 0.75, 0.01, 0.1)
    assert [cfg.generator_variant(v).sample.cfg_scale for v in ("ar-l", "ar-xl", "ar-xxl")] == [6.0, 5.3, 4.9]
    assert (cfg.data.resolution, t.num_tokens, t.sampler.steps) == (256, 256, 25)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tokenizer.stage1.optim.lr=fast", "tokenizer.stage1.optim.lr: expected float, got str ('fast')"),
        ("tokenizer.encoder.dpth=3", "tokenizer.encoder.dpth: unknown key; did you mean 'depth'?"),
        ("data.source=lmdb", "data.source: expected one of 'synthetic', 'imagenet'"),
        ("tokenizer.bits=18.5", "tokenizer.bits: expected int, got float (18.5)"),
        ("compute.compile=yes please", "compute.compile: expected bool"),
        ("generator.sizes.L=[2, 64, 4]", None),  # a list of the right type: fine
        ("generator.sizes.L=[2, 64]", "generator.sizes.L: expected 3 values, got 2"),
        ("tokenizer_variants.b32.bits=x", "tokenizer_variants.b32.bits: expected int"),
        ("generator_variants.ar-l.tokenizer=b99", "unknown tokenizer variant 'b99'"),
        ("evaluation.sweeps.generator=ar-q", "unknown generator variant 'ar-q'"),
        ("tokenizer_variants.lpips-only.stage1.from_variant=b77", "no variant 'b77'"),
    ],
)
def test_errors_name_the_key_and_the_expected_type(override, message):
    if message is None:
        from_dict(raw(), [override])
        return
    with pytest.raises(ConfigError) as err:
        from_dict(raw(), [override])
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("tokenizer.stage1.optim.batch_size=-4", "tokenizer.stage1.optim.batch_size: must be >= 1, got -4"),
        ("generator.optim.steps=-10", "generator.optim.steps: must be >= 1, got -10"),
        ("data.train_shards=0", "data.train_shards: must be >= 1, got 0"),
        ("tokenizer.stage2.optim.lr=-1.0e-4", "tokenizer.stage2.optim.lr: must be > 0, got -0.0001"),
        ("generator.optim.lr=.nan", "generator.optim.lr: expected a finite number, got nan"),
        ("evaluation.batch_size=.inf", "evaluation.batch_size: expected int"),
        ("generator.optim.betas=[0.9, 1.5]", "generator.optim.betas[1]: must be >= 0 and < 1, got 1.5"),
        ("generator.optim.betas=[0.9]", "generator.optim.betas: expected 2 values, got 1"),
        ("evaluation.sweeps.top_p=[0.5, 0]", "evaluation.sweeps.top_p[1]: must be > 0 and <= 1, got 0"),
        ("data.jpeg_quality=101", "data.jpeg_quality: must be >= 1 and <= 100, got 101"),
        ("tokenizer.bits=63", "tokenizer.bits: must be >= 1 and <= 62, got 63"),
        ("seed=-1", "seed: must be >= 0"),
        ("generator.class_dropout=1.0", "generator.class_dropout: must be >= 0 and < 1, got 1.0"),
        ("pretrained.vae.batch_size=0", "pretrained.vae.batch_size: must be >= 1, got 0"),
        (
            "tokenizer_variants.b32.stage2.optim.steps=-5",
            "tokenizer_variants.b32.stage2.optim.steps: must be >= 1",
        ),
        (
            "generator_variants.ar-xl.sample.top_p=2",
            "generator_variants.ar-xl.sample.top_p: must be > 0 and <= 1",
        ),
        ("out_dir=''", "out_dir: must have at least 1 character(s), got ''"),
        # relations between settings
        ("data.synthetic.max_size=20", "data.synthetic.max_size: must be >= min_size"),
        (
            "pretrained.resnet.train_steps=0",
            "pretrained.resnet.train_steps: must be >= 1 when source is 'bootstrap'",
        ),
        ("tokenizer.encoder.heads=5", "tokenizer.encoder.heads: must divide width"),
        ("tokenizer.entropy.group_size=4", "tokenizer.entropy.group_size: must divide tokenizer.bits"),
        ("generator.mask.min_ratio=0.9", None),
        ("generator.mask={min_ratio: 0.9, max_ratio: 0.8}", "generator.mask.max_ratio: must be >= min_ratio"),
        ("generator.sizes.L=[2, 64, 5]", "generator.sizes: heads (third value) must divide width"),
    ],
)
def test_settings_out_of_their_range_are_refused_naming_the_key(override, message):
    if message is None:
        from_dict(raw(), [override])
        return
    with pytest.raises(ConfigError) as err:
        from_dict(raw(), [override])
    assert message in str(err.value)


def _numeric(tp) -> bool:
    """Whether a field type holds numbers (int/float, or lists/mappings/optionals of them)."""
    if tp in (int, float):
        return True
    return any(_numeric(a) for a in typing.get_args(tp) if a is not type(None))


def test_every_numeric_setting_has_a_documented_range():
    sections, missing = [Config], []
    while sections:
        cls = sections.pop()
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                sections.append(tp)
            elif typing.get_origin(tp) is not Literal and _numeric(tp) and "bounds" not in f.metadata:
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, f"numeric settings without a range: {missing}"


def test_json_schema_carries_the_ranges():
    import jsonschema

    schema = json_schema()
    data = schema["properties"]["data"]["properties"]
    assert data["train_shards"] == {"type": "integer", "minimum": 1}
    bad = raw()
    bad["data"]["train_shards"] = 0
    with pytest.raises(jsonschema.ValidationError, match="minimum"):
        jsonschema.validate(bad, schema)
    bad = raw()
    bad["generator"]["optim"]["betas"] = [0.9, 1.0]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_overrides_apply_in_order_and_parse_yaml_values():
    cfg = from_dict(raw(), ["tokenizer.bits=32", "tokenizer.bits=24", "pretrained.vae.arch={a: 1}"])
    assert cfg.tokenizer.bits == 24 and cfg.pretrained.vae.arch == {"a": 1}
    cfg = from_dict({**raw(), "overrides": ["seed=7"]})
    assert cfg.seed == 7
    with pytest.raises(ConfigError, match="expected key.path=value"):
        from_dict(raw(), ["tokenizer.bits"])


def test_variant_arch_dicts_are_replaced_not_merged():
    base = raw()
    base["tokenizer_variants"]["tiny-dec"] = {"decoder": {"transformer": {"num_layers": 1}}}
    cfg = from_dict(base)
    assert cfg.tokenizer_variant("tiny-dec").decoder.transformer == {"num_layers": 1}


def test_json_schema_file_is_in_sync_with_the_dataclasses():
    shipped = json.loads((ROOT / "workflow" / "schemas" / "config.schema.json").read_text())
    assert shipped == json_schema(), "run: semtok config-schema --output workflow/schemas/config.schema.json"


def test_json_schema_rejects_what_the_loader_rejects():
    import jsonschema

    bad = raw()
    bad["tokenizer"]["bits"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())
    jsonschema.validate(raw(), json_schema())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("steps", 0),
        ("steps", 1.7),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_p", -0.2),
        ("cfg_scale", -3),
        ("temperature", 0),
        ("temperature", -1),
        ("choice_temperature", -1),
        ("order", "sideways"),
        ("cfg_schedule", True),
    ],
)
def test_an_argument_is_refused_exactly_where_the_config_refuses_the_setting(name, value):
    """One definition of each range: `check_argument` (the APIs) and the config loader refuse the same
    values with the same words, the argument's name in place of the key."""
    with pytest.raises(ConfigError) as loaded:
        from_dict({}, [f"generator.sample.{name}={value}"])
    with pytest.raises(ConfigError) as argument:
        check_argument(value, "my_arg", SampleConfig, name)
    assert str(loaded.value).split(": ", 1)[1] == str(argument.value).split(": ", 1)[1]
    assert str(argument.value).startswith("my_arg: ") and repr(value) in str(argument.value).replace(".0", "")


def test_an_argument_within_range_comes_back_as_the_config_would_hold_it():
    assert check_argument(1, "top_p", SampleConfig) == 1.0 and isinstance(
        check_argument(1, "top_p", SampleConfig), float
    )
    assert check_argument(np.float32(0.5), "top_p", SampleConfig) == 0.5
    assert check_argument(torch.tensor(8), "steps", SampleConfig) == 8
    assert check_argument(np.int64(8), "num_inference_steps", SampleConfig, "steps") == 8
    with pytest.raises(ConfigError, match="num_inference_steps: expected int, got bool"):
        check_argument(True, "num_inference_steps", SampleConfig, "steps")


def _leaves(value, key=""):
    """(key path, value) of every leaf of a nested mapping/list."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, f"{key}[{i}]")
    else:
        yield key, value


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
@pytest.mark.parametrize("reader", ["yaml", "json"])
def test_the_settings_file_reads_back_exactly_with_every_reader(name, reader, tmp_path):
    """The resolved settings file the workflow writes (semtok.config.dumps) holds every value of both
    configs, each read back with its type by a YAML reader and a JSON reader; 5e-05 was once read by
    YAML as the string '5e-05' and stopped every job of the paper config."""
    from semtok.config import dumps, to_dict

    raw = yaml.safe_load((ROOT / "config" / name).read_text())
    raw["data"]["imagenet_root"] = raw["data"].get("imagenet_root") or "/datasets/imagenet"
    cfg = from_dict(raw, ["tokenizer.stage1.optim.lr=5.0e-9", "tokenizer.entropy.weight=1.0e+20"])
    text = dumps(cfg)
    back = yaml.safe_load(text) if reader == "yaml" else json.loads(text)
    expected = dict(_leaves(to_dict(cfg)))
    got = dict(_leaves(back))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == value and type(got[key]) is type(value), f"{key}: {got[key]!r} != {value!r}"
    path = tmp_path / "settings.json"
    path.write_text(text)
    assert load(path) == cfg


def test_an_unquoted_yaml_no_is_the_choice_no():
    """YAML 1.1 reads `mixed_precision: no` (file or --set) as false; the setting still means "no",
    and a boolean where no such choice exists is still refused."""
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["compute"]["mixed_precision"] = yaml.safe_load("no")
    assert raw["compute"]["mixed_precision"] is False
    assert from_dict(raw, []).compute.mixed_precision == "no"
    assert from_dict(raw, ["compute.mixed_precision=bf16"]).compute.mixed_precision == "bf16"
    assert from_dict(raw, ["compute.mixed_precision=no"]).compute.mixed_precision == "no"
    with pytest.raises(ConfigError, match="data.source: expected one of"):
        from_dict(raw, ["data.source=false"])
