"""SemTokPipeline (semtok/sampling/pipeline.py) as a diffusers user expects it, on tiny randomly
initialised models of the real classes: the generator's saved settings as defaults, diffusers' argument
names, every value checked against the config's range, generators per image and on any device, class
names, dtype, a progress bar. The README's snippets on a default run's models: `test_readme_*`."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semtok import registry
from semtok.config import SampleConfig
from semtok.models.factory import build_tokenizer
from semtok.models.generator import MaskedGenerator
from semtok.sampling.pipeline import SemTokPipeline
from semtok.sampling.settings import sampler_kwargs

ROOT = Path(__file__).resolve().parents[2]
SAVED = dataclasses.replace(SampleConfig(), steps=4, top_p=0.9, cfg_scale=2.0, order="confidence")
NAMES = ["circle noise", "square, box", "triangle", "star"]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def folders(tiny, tmp_path_factory) -> dict[str, Path]:
    """A Stage II tokenizer and two generators of its tokens: one saved with its sampling settings and
    class names (as `train-ar` saves it), one saved without (a folder of an older semtok)."""
    out = tmp_path_factory.mktemp("pipeline")
    cfg = tiny.config(out)
    torch.manual_seed(0)
    tok = build_tokenizer(cfg, "b18")
    tok.decoder.enable_refiner()
    tok.register_to_config(decoder_config=registry.public_config(tok.decoder.config))
    with torch.no_grad():  # SD3's zero-initialised output layers would decode every token to one image
        for param in tok.decoder.parameters():
            if not param.any():
                param.normal_(0.0, 0.02)
    tok.save_pretrained(out / "tokenizer")
    arch = {
        "depth": 2,
        "width": 64,
        "heads": 4,
        "num_tokens": tok.num_tokens,
        "bits": tok.bits,
        "num_classes": len(NAMES),
        "head": "bitwise",
        "causal": False,
        "class_dropout": 0.1,
        "grad_checkpointing": False,
    }
    MaskedGenerator(**arch, sample_settings=sampler_kwargs(SAVED), class_names=NAMES).save_pretrained(
        out / "generator"
    )
    MaskedGenerator(**arch).save_pretrained(out / "old-generator")
    return {"tokenizer": out / "tokenizer", "generator": out / "generator", "old": out / "old-generator"}


@pytest.fixture(scope="module")
def pipe(folders) -> SemTokPipeline:
    pipe = SemTokPipeline.from_pretrained(folders["generator"], folders["tokenizer"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_defaults_are_the_settings_the_generator_was_saved_with(pipe):
    assert pipe.default_settings == SAVED
    default = pipe([1, 2], generator=seeded(0), output_type="np").images
    explicit = pipe([1, 2], generator=seeded(0), output_type="np", **sampler_kwargs(SAVED)).images
    paper = pipe(
        [1, 2], generator=seeded(0), output_type="np", **sampler_kwargs(SampleConfig(steps=4))
    ).images
    assert np.array_equal(default, explicit) and not np.array_equal(default, paper)


def test_a_generator_saved_without_settings_warns_and_takes_the_schemas(folders):
    with pytest.warns(UserWarning, match="saved without its sampling settings"):
        old = SemTokPipeline.from_pretrained(folders["old"], folders["tokenizer"])
    assert old.default_settings == SampleConfig() and old.id2label == {}
    with pytest.raises(ValueError, match="steps=64 .* at most 16"):  # the paper's 64 steps, K = 16
        old([0])
    assert old([0], num_inference_steps=2, output_type="pt").images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="without class names"):
        old(["triangle"])


def test_diffusers_names_and_ours_are_the_same_settings(pipe):
    ours = pipe([0, 3], steps=3, cfg_scale=1.5, generator=seeded(4), output_type="np").images
    theirs = pipe(
        [0, 3], num_inference_steps=3, guidance_scale=1.5, generator=seeded(4), output_type="np"
    ).images
    assert np.array_equal(ours, theirs)
    with pytest.raises(ValueError, match="num_inference_steps and steps are the same setting"):
        pipe([0], num_inference_steps=3, steps=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cfg_scale": -3}, "cfg_scale: must be >= 0, got -3"),
        ({"guidance_scale": -0.5}, "guidance_scale: must be >= 0"),
        ({"temperature": 0}, "temperature: must be > 0, got 0"),
        ({"temperature": -1}, "temperature: must be > 0"),
        ({"top_p": 0}, r"top_p: must be > 0 and <= 1, got 0"),
        ({"top_p": 1.5}, r"top_p: must be > 0 and <= 1, got 1.5"),
        ({"top_p": -0.2}, "top_p: must be > 0"),
        ({"choice_temperature": -1}, "choice_temperature: must be >= 0"),
        ({"num_inference_steps": 0}, "num_inference_steps: must be >= 1"),
        ({"num_inference_steps": 2.5}, "num_inference_steps: expected int, got float"),
        ({"steps": 17}, "at most 16"),
        ({"top_p": float("nan")}, "top_p: expected a finite number"),
        ({"guidance_scale": "6"}, "guidance_scale: expected float, got str"),
        ({"order": "sideways"}, "order: expected one of 'random', 'confidence'"),
        ({"cfg_schedule": "cosine"}, "cfg_schedule: expected one of"),
        ({"output_type": "latent"}, "output_type must be 'pil', 'np' or 'pt'"),
    ],
)
def test_settings_outside_the_configs_range_are_refused_naming_them(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe([0], **kwargs)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (1.7, r"1\.7 is not a class id"),
        ([0, 2.0], r"2\.0 is not a class id"),
        (True, "True is not a class id"),
        (torch.tensor([0.0, 1.0]), r"0\.0 is not a class id"),
        ([4], r"classes in \[0, 4\), got \[4\]"),
        ([-1], r"classes in \[0, 4\)"),
        ([], "class_labels is empty"),
        (["trianlge"], r"no class named 'trianlge'; did you mean \['triangle'\]"),
    ],
)
def test_bad_class_labels_are_refused(pipe, labels, message):
    with pytest.raises(ValueError, match=message):
        pipe(labels)


def test_class_names_are_known_and_labels_can_be_names(pipe):
    assert pipe.id2label == dict(enumerate(NAMES))
    assert pipe.labels["square"] == pipe.labels["box"] == pipe.labels["square, box"] == 1
    assert pipe.get_label_ids(["star", "circle noise"]) == [3, 0]
    by_name = pipe(["triangle", "box"], generator=seeded(2), output_type="np").images
    by_id = pipe(np.array([2, 1]), generator=seeded(2), output_type="np").images
    assert np.array_equal(by_name, by_id)


def test_one_generator_per_image_gives_an_image_whatever_its_batch(pipe):
    alone = pipe([2], generator=[seeded(7)], output_type="np").images
    batched = pipe([0, 2, 1], generator=[seeded(1), seeded(7), seeded(3)], output_type="np").images
    shuffled = pipe([2, 0], generator=[seeded(7), seeded(1)], output_type="np").images
    assert np.array_equal(alone[0], batched[1]) and np.array_equal(alone[0], shuffled[0])
    assert np.array_equal(batched[0], shuffled[1])
    assert not np.array_equal(batched[0], batched[1]) and not np.array_equal(batched[1], batched[2])
    with pytest.raises(ValueError, match="2 generators for 3 images"):
        pipe([0, 1, 2], generator=[seeded(0), seeded(1)])
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        pipe([0], generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: a generator on another device")
def test_a_generator_on_another_device_than_the_pipeline(pipe):
    cpu = pipe([0, 1], generator=seeded(5), output_type="np").images
    on_gpu = pipe([0, 1], generator=torch.Generator("cuda").manual_seed(5), output_type="np").images
    assert on_gpu.shape == cpu.shape
    pipe.to("cuda")
    try:
        again = pipe([0, 1], generator=seeded(5), output_type="np").images
        assert again.shape == cpu.shape
    finally:
        pipe.to("cpu")


def test_the_same_seed_gives_the_same_images(pipe):
    first = pipe([0, 1], generator=seeded(9), output_type="pt").images
    assert torch.equal(first, pipe([0, 1], generator=seeded(9), output_type="pt").images)


def test_output_types_and_return_dict(pipe):
    pt = pipe([0, 1], generator=seeded(3), output_type="pt").images
    assert (
        pt.shape == (2, 3, 32, 32)
        and pt.dtype == torch.float32
        and 0 <= float(pt.min()) <= float(pt.max()) <= 1
    )
    (uint8,) = pipe([0, 1], generator=seeded(3), output_type="np", return_dict=False)
    assert uint8.shape == (2, 32, 32, 3) and uint8.dtype == np.uint8
    pil = pipe([0, 1], generator=seeded(3)).images
    assert all(isinstance(p, Image.Image) for p in pil)
    assert np.array_equal(np.stack([np.asarray(p) for p in pil]), uint8)


@pytest.mark.parametrize("how", ["torch_dtype", "to"])
def test_bfloat16_runs_on_the_cpu(folders, how):
    if how == "torch_dtype":
        pipe = SemTokPipeline.from_pretrained(
            folders["generator"], folders["tokenizer"], torch_dtype=torch.bfloat16
        )
    else:
        pipe = SemTokPipeline.from_pretrained(folders["generator"], folders["tokenizer"]).to(torch.bfloat16)
    assert pipe.dtype == torch.bfloat16
    images = pipe([0, 1], generator=seeded(0), output_type="pt").images
    assert images.shape == (2, 3, 32, 32) and bool(torch.isfinite(images).all())


@pytest.mark.parametrize("mode", [None, "no", "bf16"])
def test_mixed_precision_sets_the_autocast_of_both_stages(folders, mode):
    """The sample job sets the run's compute.mixed_precision; unset, the CPU runs without autocast."""
    pipe = SemTokPipeline.from_pretrained(folders["generator"], folders["tokenizer"])
    pipe.mixed_precision = mode
    seen = []
    hooks = [
        module.register_forward_hook(lambda m, args, out: seen.append(torch.is_autocast_enabled("cpu")))
        for module in (pipe.transformer, pipe.tokenizer.decoder.transformer)
    ]
    try:
        images = pipe([0, 1], num_inference_steps=2, generator=seeded(0), output_type="pt").images
    finally:
        for hook in hooks:
            hook.remove()
    assert seen and set(seen) == {mode == "bf16"} and bool(torch.isfinite(images).all())
    pipe.mixed_precision = "fp8"
    with pytest.raises(ValueError, match="mixed_precision"):
        pipe([0], num_inference_steps=2)


def test_a_progress_bar_over_the_sampling_steps(folders):
    pipe = SemTokPipeline.from_pretrained(folders["generator"], folders["tokenizer"])
    bar = io.StringIO()
    pipe.set_progress_bar_config(file=bar, disable=False)
    pipe([0], num_inference_steps=3)
    assert "3/3" in bar.getvalue()
    pipe.set_progress_bar_config(disable=True)
    bar.truncate(0)
    pipe([0])
    assert bar.getvalue().strip("\0") == ""


def test_save_pretrained_keeps_settings_and_names_and_follows_the_umask(pipe, tmp_path):
    previous = os.umask(0o002)
    try:
        pipe.save_pretrained(tmp_path / "pipeline")
    finally:
        os.umask(previous)
    weights = sorted((tmp_path / "pipeline").rglob("*.safetensors"))
    assert len(weights) == 2 and {oct(w.stat().st_mode & 0o777) for w in weights} == {"0o664"}
    again = SemTokPipeline.from_pretrained(tmp_path / "pipeline")
    assert again.default_settings == SAVED and again.id2label == pipe.id2label
    again.set_progress_bar_config(disable=True)
    images = [p([1, 2], generator=seeded(1), output_type="pt").images for p in (pipe, again)]
    torch.testing.assert_close(images[0], images[1])


def test_an_edited_saved_setting_is_refused_naming_it(folders, tmp_path):
    import shutil

    shutil.copytree(folders["generator"], tmp_path / "generator")
    config = json.loads((tmp_path / "generator" / "config.json").read_text())
    config["sample_settings"]["top_p"] = 1.5
    (tmp_path / "generator" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"sample_settings\.top_p: must be > 0 and <= 1, got 1\.5"):
        SemTokPipeline.from_pretrained(tmp_path / "generator", folders["tokenizer"])


# ---------------------------------------------------------------------------------------------
# The README's Python snippets, run as written on the models of a default run


def readme_snippets() -> list[str]:
    """The ```python blocks of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_python_snippets():
    snippets = readme_snippets()
    assert len(snippets) >= 2 and any("SemTokPipeline" in s for s in snippets)


@pytest.mark.slow
def test_readme_snippets_run_on_the_default_runs_models(default_run, tmp_path):
    """Every snippet, in order and in one interpreter, in a folder whose results/ is the default run's."""
    (tmp_path / "results").symlink_to(default_run.outputs)
    script = tmp_path / "readme.py"
    script.write_text("\n".join(readme_snippets()))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-4000:]
