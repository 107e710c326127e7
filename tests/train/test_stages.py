"""Stage I, Stage II, the tokenizer API, token dumping and generator training on real (tiny) shards.

One pipeline per module: synthetic images → shards → pre-encoded features (random frozen VAE and
SigLIP of the real classes) → Stage I → Stage II → token dump → generator, through the same
functions the workflow's entry points call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from semtok import paths
from semtok.config import SampleConfig, from_dict, to_dict
from semtok.data.images import decode_rgb, to_uint8
from semtok.data.shards import read_shard
from semtok.data.tokens import dump_shard, read_token_shard
from semtok.eval.reference import val_batches
from semtok.jobs.generator import train_generator
from semtok.jobs.tokenizer import train_stage1, train_stage2
from semtok.models.factory import build_tokenizer
from semtok.models.generator import MaskedGenerator
from semtok.models.tokenizer import SemTok
from semtok.sampling.flow import flow_matching_targets
from semtok.sampling.masked import sample
from semtok.sampling.pipeline import SemTokPipeline
from semtok.sampling.settings import sampler_kwargs
from semtok.train.tokenizer import refiner_errors, stage2_start

STAGES = [
    "data.synthetic.train_per_class=12",
    "pretrained.lpips.source=random",
    "pretrained.lpips.arch={widths: [4, 8, 8, 8, 8]}",
    "pretrained.resnet.source=random",
    "pretrained.resnet.arch={block: basic, layers: [1, 1, 1, 1], num_classes: 4, image_size: 32}",
    "tokenizer.stage1.optim={steps: 80, batch_size: 16, lr: 0.002, warmup: 5, ckpt_every: 20, log_every: 10, ema: 0.9}",
    "tokenizer.stage2.optim={steps: 40, batch_size: 8, lr: 0.002, warmup: 2, ckpt_every: 20, log_every: 5, ema: 0.9}",
    "tokenizer.stage2.gan.start=20",
    "tokenizer.stage2.resnet_size=32",
    "generator.optim={steps: 100, batch_size: 16, lr: 0.003, warmup: 5, ckpt_every: 50, log_every: 10, ema: 0.9}",
]


def metrics(cfg, job: str) -> list[dict]:
    lines = (paths.log_dir(cfg.out, job) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def cfg(tiny, tmp_path_factory):
    config = tiny.config(tmp_path_factory.mktemp("stages"), STAGES)
    tiny.build_images(config)
    tiny.build_features(config)
    return config


@pytest.fixture(scope="module")
def stage1(cfg):
    out = paths.tokenizer_dir(cfg.out, "b18", "stage1")
    train_stage1(cfg, "b18", out)
    return out


@pytest.fixture(scope="module")
def stage2(cfg, stage1):
    out = paths.tokenizer_dir(cfg.out, "b18", "stage2")
    train_stage2(cfg, "b18", out)
    return out


def val_batch(cfg):
    return next(val_batches(cfg, 64, features=("latents",)))


# ---------------------------------------------------------------------------------------------
# Stage I


@torch.no_grad()
def flow_loss(model: SemTok, latents: torch.Tensor) -> float:
    """Stage I's diffusion loss on fixed validation latents, noise and timesteps."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for t in torch.linspace(0.05, 0.95, 10):
        noise = torch.randn(latents.shape, generator=gen)
        tt = torch.full((latents.shape[0],), float(t))
        x_t, v = flow_matching_targets(latents, tt, noise)
        codes = model.quantize(latents)[1].codes
        losses.append(torch.nn.functional.mse_loss(model.decoder(x_t, codes, tt), v))
    return float(torch.stack(losses).mean())


def test_stage1_lowers_its_loss_clearly(cfg, stage1):
    latents = val_batch(cfg)["latent"]
    torch.manual_seed(cfg.seed)
    before = flow_loss(build_tokenizer(cfg, "b18"), latents)
    after = flow_loss(SemTok.from_pretrained(stage1), latents)
    print(f"Stage I diffusion loss on validation {before:.3f} -> {after:.3f}")
    assert after < 0.8 * before


def test_stage1_killed_then_resumed_ends_with_the_uninterrupted_weights(cfg, stage1, tmp_path):
    """SIGKILL the real entry point mid-run, rerun it: it resumes from its last checkpoint (not
    step 0) and ends bit-identical to the uninterrupted run of the fixture."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(to_dict(cfg)))
    ckpts = paths.checkpoint_dir(cfg.out, "tokenizer-b18-stage1")
    log_file = paths.log_dir(cfg.out, "tokenizer-b18-stage1") / "metrics.jsonl"
    log_file.unlink()
    out = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "semtok.cli", "stage1", "--config", str(config_file), "--variant", "b18"]
    env = {**os.environ, "SEMTOK_FORKSERVER": ""}
    assert not ckpts.exists(), "the fixture's checkpoints are removed once its output is written"
    proc = subprocess.Popen([*cmd, "--output", str(out)], env=env, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (ckpts / "step-00000040" / "meta.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the declared output must appear only at the end"
    done = subprocess.run([*cmd, "--output", str(out)], env=env, capture_output=True, text=True, check=True)
    assert "resumed from" in done.stderr and "step 40" in done.stderr
    steps = [json.loads(line)["step"] for line in log_file.read_text().splitlines()]
    assert steps[-1] == 80 and 10 in steps and steps.count(50) == 1  # 50-80 logged once, after the resume
    expected = load_file(str(next(stage1.glob("*.safetensors"))))
    resumed = load_file(str(next(out.glob("*.safetensors"))))
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        assert torch.equal(value, resumed[key]), key


@pytest.mark.parametrize(
    "change",
    ["tokenizer.stage1.optim.lr=0.0005", "tokenizer.stage1.optim.steps=5", "tokenizer.encoder.depth=3"],
    ids=["lr", "fewer-steps", "encoder-depth"],
)
def test_stage1_rerun_after_a_settings_change_equals_a_run_from_scratch(cfg, tmp_path, monkeypatch, change):
    """A Stage I job killed before its export leaves checkpoints; after a settings change the rerun
    must neither resume from them (lr), nor export the old model (fewer steps than the checkpoint's),
    nor fail to load them (encoder depth): it equals a run from scratch with the new settings."""
    import shutil

    from semtok.train.loop import Trainer

    def config(out: str, overrides: list[str]):
        raw = to_dict(cfg)
        raw["out_dir"] = str(tmp_path / out)
        raw["tokenizer"]["stage1"]["optim"].update(steps=8, ckpt_every=2, log_every=2)
        shutil.copytree(cfg.out / "data", tmp_path / out / "data", dirs_exist_ok=True)
        return from_dict(raw, overrides)

    old, new = config("out", []), config("out", [change])
    train_stage1(config("fresh", [change]), "b18", tmp_path / "scratch")

    def killed_before_export(*_args, **_kwargs):
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "export", killed_before_export)
        with pytest.raises(RuntimeError, match="killed"):
            train_stage1(old, "b18", tmp_path / "old")
    assert list(paths.checkpoint_dir(new.out, "tokenizer-b18-stage1").glob("step-*"))
    train_stage1(new, "b18", tmp_path / "rerun")
    expected = load_file(str(next((tmp_path / "scratch").glob("*.safetensors"))))
    rerun = load_file(str(next((tmp_path / "rerun").glob("*.safetensors"))))
    assert expected.keys() == rerun.keys()
    for key, value in expected.items():
        assert torch.equal(value, rerun[key]), key


# ---------------------------------------------------------------------------------------------
# Stage II


def test_refiner_improves_pixel_error_over_the_untrained_refiner(cfg, stage2):
    """Stage II optimises pixels (MSE + perceptual + GAN, paper Eq. 7), and the pixel error of
    validation reconstructions drops. The latent error is printed, not asserted: with a tiny or
    random VAE, pixel-space training moves the refiner's latents off the encoder's manifold (the
    latent MSE rises while the pixel MSE falls; see docs/DECISIONS.md)."""
    batch = val_batch(cfg)
    torch.manual_seed(0)
    before = refiner_errors(stage2_start(cfg, "b18"), batch)
    after = refiner_errors(SemTok.from_pretrained(stage2), batch)
    print(
        f"refiner latent MSE {before[0]:.3f} -> {after[0]:.3f}, pixel MSE {before[1]:.3f} -> {after[1]:.3f}"
    )
    assert after[1] < 0.97 * before[1]


def test_refiner_latent_diagnostic_prints_errors_and_decoder_sensitivity(cfg, stage2, tmp_path):
    """benchmarks/refiner_latents.py (the measurement behind docs/DECISIONS.md) runs on a trained run."""
    import re

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(to_dict(cfg)))
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "refiner_latents.py"
    done = subprocess.run(
        [sys.executable, str(script), "--config", str(config_file), "--out", str(cfg.out), "--images", "16"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pixel = re.search(r"pixel MSE ([\d.]+) -> ([\d.]+)", done.stdout)
    sv = re.search(r"max ([\d.]+), median ([\d.]+), min ([\d.]+)", done.stdout)
    assert pixel and sv, done.stdout
    assert float(sv[1]) >= float(sv[2]) >= float(sv[3]) > 0


def test_discriminator_is_off_before_its_start_step_and_on_after(cfg, stage2):
    logs = metrics(cfg, "tokenizer-b18-stage2")
    start = cfg.tokenizer.stage2.gan.start
    before = [m for m in logs if m["step"] <= start]
    after = [m for m in logs if m["step"] > start]
    assert before and after
    assert all(m["gan_active"] == 0.0 and "loss/disc" not in m and "gan_g" not in m for m in before)
    assert all(m["gan_active"] == 1.0 and "loss/disc" in m and "gan_g" in m for m in after)


# ---------------------------------------------------------------------------------------------
# The Python API


def test_encode_decode_round_trip_shapes_and_dtypes(cfg, stage1, stage2):
    tok = SemTok.from_pretrained(stage2).eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    out = tok.encode(images)
    assert out.indices.shape == (3, tok.num_tokens) and out.indices.dtype == torch.int64
    assert out.bits.shape == (3, tok.num_tokens, 18) and out.bits.dtype == torch.bool
    assert int(out.indices.max()) < 2**18
    for tokens in (out.indices, out.bits):
        recon = tok.decode(tokens)
        assert recon.shape == (3, 3, 32, 32) and recon.dtype == torch.float32
        assert 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0
    torch.testing.assert_close(tok.decode(out.indices), tok.decode(out.bits))
    torch.testing.assert_close(tok.decode(out), tok.decode(out.bits))  # the encode output itself
    flow = SemTok.from_pretrained(stage1).eval()
    recon = flow.decode_flow(flow.encode(images.float() / 255).indices, steps=3)
    assert recon.shape == (3, 3, 32, 32)


def test_bad_inputs_raise_clear_errors(stage1, stage2):
    tok = SemTok.from_pretrained(stage2).eval()
    k = tok.num_tokens
    with pytest.raises(ValueError, match=r"shape \(B, 3, 32, 32\)"):
        tok.encode(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tok.encode(torch.full((1, 3, 32, 32), 2.0))
    with pytest.raises(ValueError, match=r"2\^18"):
        tok.decode(torch.full((1, k), 2**18))
    with pytest.raises(ValueError, match=r"\[0, 2\^18\)"):
        tok.decode(torch.full((1, k), -1))
    with pytest.raises(ValueError, match="integer tensor"):
        tok.decode(torch.zeros(1, k))
    with pytest.raises(ValueError, match="bits must have shape"):
        tok.decode(torch.zeros(1, k, 17, dtype=torch.bool))
    with pytest.raises(ValueError, match="use decode_flow"):
        SemTok.from_pretrained(stage1).decode(torch.zeros(1, k, dtype=torch.long))
    with pytest.raises(ValueError, match="flow decoding needs Stage I weights"):
        tok.decode_flow(torch.zeros(1, k, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        tok.encode(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        tok.encode(torch.zeros(0, 3, 32, 32))
    with pytest.raises(ValueError, match="non-empty"):
        tok.decode(torch.zeros(0, k, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        tok.decode(np.zeros((1, k), dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# Token dump and generator


@pytest.fixture(scope="module")
def tokens(cfg, stage2):
    outs = []
    for i in range(cfg.data.train_shards):
        out = paths.token_shard(cfg.out, "b18", i)
        dump_shard(cfg, "b18", paths.feature_shard(cfg.out, "latents", "train", i), out, batch_size=7)
        outs.append(out)
    return outs


def test_dumped_tokens_equal_encode_of_the_same_images(cfg, stage2, tokens):
    tok = SemTok.from_pretrained(stage2).eval()
    dumped = {s["key"]: s for s in read_token_shard(tokens[0], tok.bits)}
    images = {s["__key__"]: decode_rgb(s["jpg"]) for s in read_shard(paths.image_shard(cfg.out, "train", 0))}
    assert dumped.keys() == images.keys()
    keys = sorted(images)
    batch = torch.from_numpy(np.stack([images[k] for k in keys])).permute(0, 3, 1, 2)
    out = tok.encode(batch, batch_size=cfg.data.encode_batch_size)
    flipped = tok.encode(batch.flip(-1), batch_size=cfg.data.encode_batch_size)
    for i, key in enumerate(keys):
        assert np.array_equal(dumped[key]["bits"], out.bits[i].numpy()), key
        assert np.array_equal(dumped[key]["bits_flip"], flipped.bits[i].numpy()), key


@pytest.fixture(scope="module")
def generator(cfg, tokens):
    out = paths.generator_dir(cfg.out, "ar-l")
    train_generator(cfg, "ar-l", [str(t) for t in tokens], out)
    return out


def test_generator_training_on_dumped_tokens_lowers_the_loss(cfg, generator):
    logs = metrics(cfg, "generator-ar-l")
    first, last = logs[0]["loss/model"], logs[-1]["loss/model"]
    print(f"generator loss {first:.4f} -> {last:.4f}")
    assert last < 0.9 * first


def test_class_dropout_nulls_the_configured_fraction_of_labels_in_training(
    cfg, tokens, tmp_path, monkeypatch
):
    """The real training step nulls class_dropout (0.1) of the labels once, not 1 - 0.9^2 = 0.19:
    every label reaching the class embedding during train_generator is recorded."""
    import semtok.jobs.generator as job

    seen: list[torch.Tensor] = []
    build = job.build_generator

    def build_and_watch(cfg, variant):
        model = build(cfg, variant)
        model.class_embed.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().clone()))
        return model

    monkeypatch.setattr(job, "build_generator", build_and_watch)
    raw = to_dict(cfg)
    raw["out_dir"] = str(tmp_path)
    raw["generator"]["optim"].update(steps=8, batch_size=512, ckpt_every=8, log_every=8)

    paths.tokenizer_dir(tmp_path, "b18", "stage2").parent.mkdir(parents=True)
    os.symlink(paths.tokenizer_dir(cfg.out, "b18", "stage2"), paths.tokenizer_dir(tmp_path, "b18", "stage2"))
    os.symlink(cfg.out / "data", tmp_path / "data")  # the train index gives the class count
    train_generator(from_dict(raw), "ar-l", [str(t) for t in tokens], tmp_path / "gen")
    labels = torch.cat(seen)
    assert labels.numel() == 8 * 512
    rate = float((labels == cfg.data.synthetic.num_classes).float().mean())
    print(f"null-label rate in training: {rate:.3f} (class_dropout {cfg.generator.class_dropout})")
    assert abs(rate - cfg.generator.class_dropout) < 0.03


def test_readme_generation_example_runs(cfg, generator, stage2):
    """README, Python API: the generation pipeline from the generator and tokenizer folders gives the
    images of sampling the generator and decoding with the tokenizer, in every output type, with the
    settings `train-ar` saved (the variant's `generator.sample`) for those it is not given."""
    pipe = SemTokPipeline.from_pretrained(generator, stage2)
    images = pipe([0, 1, 2], steps=4, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (3, 3, 32, 32) and 0.0 <= float(images.min()) <= float(images.max()) <= 1.0
    tok = SemTok.from_pretrained(stage2).eval()
    model = MaskedGenerator.from_pretrained(generator).eval()
    assert sampler_kwargs(pipe.default_settings) == sampler_kwargs(cfg.generator_variant("ar-l").sample)
    settings = sampler_kwargs(dataclasses.replace(cfg.generator_variant("ar-l").sample, steps=4))
    out = sample(model, torch.arange(3), **settings, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(tok.decode(out), images)
    uint8 = pipe(
        torch.arange(3), steps=4, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert uint8.dtype == np.uint8 and np.array_equal(uint8, to_uint8(images))
    pil = pipe([0, 1, 2], steps=4, generator=torch.Generator().manual_seed(0)).images
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(pil, uint8, strict=True))
    with pytest.raises(ValueError, match=r"classes in \[0, 4\)"):
        pipe([4])


def test_generation_pipeline_saves_and_loads_as_one_folder(generator, stage2, tmp_path):
    pipe = SemTokPipeline.from_pretrained(generator, stage2)
    pipe.save_pretrained(tmp_path / "pipeline")
    again = SemTokPipeline.from_pretrained(tmp_path / "pipeline")
    images = [
        p([1, 2], steps=2, generator=torch.Generator().manual_seed(1), output_type="pt").images
        for p in (pipe, again)
    ]
    torch.testing.assert_close(images[0], images[1])


def test_class_conditional_samples_differ_by_class(cfg, generator):
    model = MaskedGenerator.from_pretrained(generator).eval()
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 8 + [1] * 8)
    settings = sampler_kwargs(dataclasses.replace(SampleConfig(), steps=8, cfg_scale=3.0))
    bits = sample(model, labels, **settings, generator=gen).bits.float()
    between = (bits[:8].mean(0) - bits[8:].mean(0)).abs().mean()
    within = (bits[:4].mean(0) - bits[4:8].mean(0)).abs().mean()
    print(f"bit-frequency gap between classes {between:.3f}, within a class {within:.3f}")
    assert between > within


def test_stages_train_with_two_distributed_processes(cfg, stage1, tmp_path):
    """Stage I and Stage II under torchrun with 2 CPU processes (DDP over gloo): no unused trainable
    parameter, the discriminator's collectives line up, both ranks finish, rank 0 exports."""
    import shutil

    out = tmp_path / "ddp"
    shutil.copytree(cfg.out / "data", out / "data")
    shutil.copytree(stage1, paths.tokenizer_dir(out, "b18", "stage1"))
    raw = to_dict(cfg)
    raw["out_dir"] = str(out)
    for stage in ("stage1", "stage2"):
        raw["tokenizer"][stage]["optim"].update(steps=4, ckpt_every=2, log_every=2, batch_size=8)
    raw["tokenizer"]["stage2"]["gan"]["start"] = 2
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(raw))
    env = {**os.environ, "SEMTOK_FORKSERVER": "", "OMP_NUM_THREADS": "1"}
    for stage in ("stage1", "stage2"):
        target = tmp_path / f"{stage}-out"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "-m",
                "semtok.cli",
                stage,
                "--config",
                str(config_file),
                "--variant",
                "b18",
                "--output",
                str(target),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.count('"steps": 4') == 2, done.stdout  # both ranks reached the end
        assert list(target.glob("*.safetensors"))


def test_a_seed_replica_trains_other_weights_and_retrains_its_own(cfg, tokens, tmp_path):
    """`seed_offset` moves a variant's training seed (initialisation and data order): replicas of the
    same settings under offsets 0 and 1 differ, and offset 1 twice gives the same weights."""
    short = {"optim": {"steps": 3, "ckpt_every": 3, "log_every": 1}}
    cfg = dataclasses.replace(
        cfg,
        tokenizer_variants={
            **cfg.tokenizer_variants,
            "main": {"stage1": short},
            "replica": {"stage1": short, "seed_offset": 1},
        },
        generator_variants={"main": short, "replica": {**short, "seed_offset": 1}},  # on b18's tokens
    )
    assert cfg.variant_seed(cfg.generator_variant("replica")) == cfg.seed + 1
    shards = [str(t) for t in tokens]

    def weights(train, variant: str, run: str) -> dict[str, torch.Tensor]:
        train(variant, tmp_path / run)
        return load_file(next((tmp_path / run).rglob("*.safetensors")))

    trainings = {
        "stage1": lambda variant, out: train_stage1(cfg, variant, out),
        "generator": lambda variant, out: train_generator(cfg, variant, shards, out),
    }
    for name, train in trainings.items():
        main = weights(train, "main", f"{name}-main")
        replica, again = weights(train, "replica", f"{name}-a"), weights(train, "replica", f"{name}-b")
        assert any(not torch.equal(main[k], replica[k]) for k in main), name
        assert all(torch.equal(replica[k], again[k]) for k in replica), name
