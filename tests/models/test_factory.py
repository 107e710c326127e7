"""Models from the config (semtok/models/factory.py): the pretrained decoder's architecture is checked
against `tokenizer.decoder.transformer`."""

from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel

from semtok.config import ConfigError
from semtok.models.factory import build_tokenizer


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
