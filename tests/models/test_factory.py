"""Models from the config (semtok/models/factory.py): the pretrained decoder's architecture is checked
against `tokenizer.decoder.transformer`; a generator carries its variant's sampling settings and the
dataset's class names (the generation pipeline's defaults)."""

from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel

from semtok import paths
from semtok.config import ConfigError
from semtok.data import imagenet, synthetic
from semtok.models import factory
from semtok.models.factory import build_tokenizer
from semtok.models.generator import MaskedGenerator
from semtok.sampling.settings import sampler_kwargs


@pytest.fixture
def sd3(cfg, tmp_path):
    """A tiny SD3 transformer saved like SD3.5's (the tiny config's decoder on its 4-channel latents)."""
    arch = {**cfg.tokenizer.decoder.transformer, "in_channels": 4, "out_channels": 4, "sample_size": 8}
    torch.manual_seed(0)
    SD3Transformer2DModel(**arch).save_pretrained(tmp_path / "sd3")
    return tmp_path / "sd3", arch


def test_a_pretrained_decoder_of_the_configured_architecture_loads(make_cfg, sd3):
    path, arch = sd3
    cfg = make_cfg(
        ["tokenizer.decoder.init=pretrained", f"pretrained.sd3={{source: pretrained, id: '{path}'}}"]
    )
    cfg.tokenizer_variants["b18"] = {"decoder": {"transformer": arch}}
    tok = build_tokenizer(cfg, "b18")
    assert tok.decoder.transformer.config.num_layers == arch["num_layers"]


def test_a_pretrained_decoder_of_another_architecture_is_refused_naming_the_key(make_cfg, sd3):
    path, arch = sd3
    cfg = make_cfg(
        ["tokenizer.decoder.init=pretrained", f"pretrained.sd3={{source: pretrained, id: '{path}'}}"]
    )
    cfg.tokenizer_variants["b18"] = {"decoder": {"transformer": {**arch, "num_layers": 24}}}
    with pytest.raises(ConfigError, match=r"tokenizer.decoder.transformer.num_layers: 24, but .* has 2"):
        build_tokenizer(cfg, "b18")


def test_a_generator_is_saved_with_its_sampling_settings_and_class_names(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(["generator_variants.ar-l.sample={steps: 6, top_p: 0.9, order: confidence}"])
    synthetic.write_dataset(cfg.data.synthetic, paths.synthetic_root(cfg.out))
    imagenet.write_index(imagenet.build_index(cfg, "train")[0], paths.index_file(cfg.out, "train"))
    monkeypatch.setattr(factory, "tokenizer_shape", lambda cfg, variant: (16, 18))
    torch.manual_seed(0)
    factory.build_generator(cfg, "ar-l").save_pretrained(tmp_path / "ar-l")
    saved = MaskedGenerator.from_pretrained(tmp_path / "ar-l").config
    assert saved.sample_settings == sampler_kwargs(cfg.generator_variant("ar-l").sample)
    assert saved.sample_settings["steps"] == 6 and saved.sample_settings["order"] == "confidence"
    assert saved.class_names == imagenet.class_names(cfg) and len(saved.class_names) == 4
    assert saved.class_names[0] != "n00000000"  # the synthetic data's descriptions, not the synset ids
