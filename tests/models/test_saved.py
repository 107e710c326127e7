"""A saved model folder that cannot give the model it names is refused with an error that names it:
missing or incomplete (never reported as a Hub connection failure), a config value of the wrong type,
weights that are not exactly the config's tensors, non-finite weights. Saved files follow the umask."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from semtok import MaskedGenerator, SemTok
from semtok.models.saved import InvalidSavedModel, check_finite, check_saved_model, nonfinite_tensors


@pytest.mark.parametrize("cls", [SemTok, MaskedGenerator])
def test_missing_folder_is_named(cls, tmp_path):
    missing = tmp_path / "tokenizer" / "b18" / "stage2"
    with pytest.raises(FileNotFoundError, match=f"no saved {cls.__name__} at {missing}"):
        cls.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="has its rule run"):
        cls.load_config(str(missing))


def test_folder_without_config_and_a_file_are_rejected(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        SemTok.from_pretrained(tmp_path / "half")
    (tmp_path / "table.md").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file"):
        SemTok.from_pretrained(tmp_path / "table.md")


def test_hub_ids_and_saved_folders_pass_the_check(tmp_path):
    check_saved_model("stabilityai/stable-diffusion-3.5-medium", "SemTok")  # left to the Hub
    (tmp_path / "config.json").write_text("{}")
    check_saved_model(tmp_path, "SemTok")
    with pytest.raises(FileNotFoundError):
        check_saved_model("./results/ar-l", "MaskedGenerator")


# ---------------------------------------------------------------------------------------------
# A folder whose config and weights do not fit each other is refused, naming the keys or tensors


WEIGHTS = "diffusion_pytorch_model.safetensors"
GENERATOR = {
    "depth": 2,
    "width": 32,
    "heads": 2,
    "num_tokens": 8,
    "bits": 6,
    "num_classes": 3,
    "head": "bitwise",
    "causal": False,
    "class_dropout": 0.1,
    "grad_checkpointing": False,
}


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """A tiny SemTok (the real classes, random weights) and a tiny generator, saved."""
    from semtok.models.factory import build_tokenizer

    out = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    build_tokenizer(tiny.config(out), "b18").save_pretrained(out / "SemTok")
    MaskedGenerator(**GENERATOR).save_pretrained(out / "MaskedGenerator")
    return out


def edited(saved, tmp_path, cls, config=None, weights=None):
    """A copy of the saved `cls` folder with its config.json and/or weights edited in place."""
    folder = tmp_path / cls.__name__
    shutil.copytree(saved / cls.__name__, folder)
    if config:
        raw = json.loads((folder / "config.json").read_text())
        config(raw)
        (folder / "config.json").write_text(json.dumps(raw))
    if weights:
        tensors = load_file(str(folder / WEIGHTS))
        weights(tensors)
        save_file(tensors, str(folder / WEIGHTS))
    return folder


def test_saved_models_load_as_saved(saved):
    assert SemTok.from_pretrained(saved / "SemTok").num_tokens == 16
    model, info = MaskedGenerator.from_pretrained(saved / "MaskedGenerator", output_loading_info=True)
    assert model.config.depth == 2 and not info["missing_keys"] and not info["unexpected_keys"]


def test_a_config_asking_for_more_layers_than_saved_is_refused_naming_them(saved, tmp_path):
    """The encoder's depth raised by one in config.json: the new block's tensors are missing from the
    weights (diffusers only logs that they were "newly initialized")."""
    folder = edited(saved, tmp_path, SemTok, config=lambda c: c["encoder_config"].update(depth=3))
    with pytest.raises(InvalidSavedModel, match=r"missing from the weights: encoder\.blocks\.2\.") as err:
        SemTok.from_pretrained(folder)
    assert str(folder) in str(err.value) and "in all" in str(err.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c.update(width=64, heads=2),
            r"of another shape: adaln\.1\.bias \(\(192,\) saved, \(384,\)",
        ),
        (lambda c: c.update(depth=1), r"in the weights but not in the model: blocks\.1\."),
    ],
    ids=["wider", "shallower"],
)
def test_misshapen_and_unexpected_weights_are_refused_naming_them(saved, tmp_path, edit, message):
    with pytest.raises(InvalidSavedModel, match=message):
        MaskedGenerator.from_pretrained(edited(saved, tmp_path, MaskedGenerator, config=edit))


@pytest.mark.parametrize(
    ("cls", "edit", "message"),
    [
        (
            SemTok,
            lambda c: c["encoder_config"].update(num_tokens="16"),
            r"encoder_config\.num_tokens: expected int, got str",
        ),
        (
            SemTok,
            lambda c: c["vae_config"].update(latent_channels=4.0),
            r"vae_config\.latent_channels: expected int, got float",
        ),
        (
            SemTok,
            lambda c: c["decoder_config"]["transformer_config"].update(num_layers=None),
            r"decoder_config\.transformer_config\.num_layers: expected int, got NoneType",
        ),
        (
            SemTok,
            lambda c: c["quantizer_config"].update(kind="vq"),
            r"quantizer_config\.kind: expected Literal\['bsq', 'lfq'\]",
        ),
        (SemTok, lambda c: c.update(latent_scale="1.0"), r"latent_scale: expected float, got str"),
        (MaskedGenerator, lambda c: c.update(causal="no"), r"causal: expected bool, got str"),
        (MaskedGenerator, lambda c: c.update(depth=True), r"depth: expected int, got bool"),
    ],
)
def test_a_config_value_of_the_wrong_type_is_refused_naming_the_key(saved, tmp_path, cls, edit, message):
    with pytest.raises(InvalidSavedModel, match=message):
        cls.from_pretrained(edited(saved, tmp_path, cls, config=edit))


def test_non_finite_weights_are_refused_naming_the_tensors_and_counts(saved, tmp_path):
    def poison(tensors):
        tensors["blocks.0.ada_offset"][0, :3] = float("nan")
        tensors["token_embed.bias"][1] = float("inf")

    folder = edited(saved, tmp_path, MaskedGenerator, weights=poison)
    with pytest.raises(InvalidSavedModel, match=r"non-finite values \(NaN or inf\) in 2 tensor\(s\)") as err:
        MaskedGenerator.from_pretrained(folder)
    assert "blocks.0.ada_offset (3 of 192 values)" in str(
        err.value
    ) and "token_embed.bias (1 of 32 values)" in str(err.value)


def test_the_finiteness_check_names_every_bad_tensor():
    tensors = {
        "a": torch.tensor([1.0, float("nan")]),
        "b": torch.arange(3),
        "c": torch.full((2, 2), -float("inf")),
    }
    assert nonfinite_tensors(tensors.items()) == [("a", 1, 2), ("c", 4, 4)]
    with pytest.raises(
        InvalidSavedModel, match=r"here: .* 2 tensor\(s\): a \(1 of 2 values\), c \(4 of 4 values\)"
    ):
        check_finite(tensors.items(), "here")
    check_finite({"b": tensors["b"], "d": torch.zeros(3)}.items(), "fine")


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_saved_files_follow_the_umask(tmp_path, mask):
    """safetensors writes its files 0600 whatever the umask: teammates could not read the weights."""
    previous = os.umask(mask)
    try:
        MaskedGenerator(**GENERATOR).save_pretrained(tmp_path / "g")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "g").iterdir()}
    assert modes == {"config.json": 0o666 & ~mask, WEIGHTS: 0o666 & ~mask}
    assert (tmp_path / "g").stat().st_mode & 0o777 == 0o777 & ~mask
