"""eval-reference, eval-gen and eval-recon --mode vae on tiny shards, a tiny stand-in classifier and a
small reference batch in ADM's layout (arr_0 uint8 NHWC, mu, sigma)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

from semtok import paths, registry
from semtok.data.images import to_uint8
from semtok.eval import reference
from semtok.eval.features import (
    ClassifierConfig,
    bootstrapped_classifier,
    build_classifier,
    build_feature_extractor,
    extract_features,
    save_classifier,
    top1_accuracy,
)
from semtok.eval.metrics import (
    FeatureStats,
    frechet_distance,
    precision_recall,
    psnr_uint8,
    stats_from_features,
)
from semtok.eval.records import ORIGINAL, VAE
from semtok.jobs import evaluation

CLASSES, SIZE = 4, 32


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    """Built shards, the bootstrapped `inception` stand-in classifier and a reference batch."""
    out = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    batch = out / "VIRTUAL_tiny.npz"
    stats = stats_from_features(rng.normal(size=(600, 512)))
    np.savez(
        batch, arr_0=rng.integers(0, 256, (24, SIZE, SIZE, 3), dtype=np.uint8), mu=stats.mu, sigma=stats.sigma
    )
    cfg = tiny.config(
        out, ["evaluation.batch_size=5", "evaluation.grid_images=100", f"evaluation.fid_reference={batch}"]
    )
    tiny.build_images(cfg)
    tiny.build_features(cfg)
    torch.manual_seed(0)
    config = ClassifierConfig(layers=(1, 1, 1, 1), num_classes=CLASSES, image_size=SIZE)
    save_classifier(build_classifier(config), config, paths.teacher_dir(out, "inception"))
    ref = out / "metrics/reference/val-features.npz"
    originals = paths.recon_metrics(out, *ORIGINAL)
    evaluation.eval_reference(argparse.Namespace(output=str(ref), metrics=str(originals)), cfg)
    return cfg, batch, ref, originals


def _metrics(path) -> dict[str, float]:
    return pd.read_csv(path).set_index("metric").value.to_dict()


def _protocols(path) -> dict[str, str]:
    return pd.read_csv(path).set_index("metric").protocol.to_dict()


def _extract(cfg, images):
    return extract_features(reference.fid_setup(cfg).extractor, images)


def test_reference_records_the_classifier_accuracy_on_the_originals(setup):
    cfg, _, _, originals = setup
    batches = list(reference.val_batches(cfg, 7))
    images = np.concatenate([to_uint8((b["image"] + 1) / 2) for b in batches])
    labels = np.concatenate([b["cls"].numpy() for b in batches])
    classifier = bootstrapped_classifier(paths.teacher_dir(cfg.out, "inception"))
    assert _metrics(originals) == {"class_acc": pytest.approx(top1_accuracy(classifier, images, labels))}
    assert _protocols(originals)["class_acc"].startswith(
        f"classifier={classifier.protocol} labels=true classes={CLASSES} "
    )


def test_generation_uses_the_reference_batch_like_adms_evaluator(setup, tmp_path):
    """gFID against the batch's own mu/sigma, precision/recall against the features of its arr_0."""
    cfg, batch, ref, _ = setup
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(CLASSES), 6)  # class order, as `semtok sample` writes
    samples = rng.integers(0, 256, (len(labels), SIZE, SIZE, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=samples, labels=labels)
    generator = paths.generator_dir(cfg.out, "ar-l")
    generator.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({"w": torch.zeros(3, 5)}, str(generator / "model.safetensors"))
    args = argparse.Namespace(
        variant="ar-l",
        setting="main",
        samples=str(tmp_path / "samples.npz"),
        reference=str(ref),
        output=str(tmp_path / "gen.csv"),
    )
    evaluation.eval_gen(args, cfg)
    got, protocols = _metrics(tmp_path / "gen.csv"), _protocols(tmp_path / "gen.csv")

    with np.load(batch) as f:
        adm_images, adm_stats = f["arr_0"], FeatureStats(mu=f["mu"], sigma=f["sigma"], n=None)
    fake, adm = _extract(cfg, samples)["pool"], _extract(cfg, adm_images)["pool"]
    val = reference.load_reference(ref).val_fid
    assert got["gFID"] == pytest.approx(frechet_distance(stats_from_features(fake), adm_stats), rel=1e-6)
    precision, recall = precision_recall(adm, fake, k=cfg.evaluation.pr_k)
    assert (got["Precision"], got["Recall"]) == pytest.approx((precision, recall))
    assert (precision, recall) != precision_recall(val, fake, k=cfg.evaluation.pr_k)
    assert protocols["gFID"].split()[1:] == ["ref=VIRTUAL_tiny.npz", f"n={len(labels)}"]
    assert "ref=VIRTUAL_tiny.npz k=3" in protocols["Precision"]
    classifier = bootstrapped_classifier(paths.teacher_dir(cfg.out, "inception"))
    assert got["class_acc"] == pytest.approx(top1_accuracy(classifier, samples, labels))
    assert protocols["class_acc"] == (
        f"classifier={classifier.protocol} labels=requested classes={CLASSES} n={len(labels)}"
    )
    assert got["params"] == 15


def test_the_frozen_vae_alone_is_measured(setup, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="semtok.progress")
    cfg, _, ref, _ = setup
    out = tmp_path / "vae.csv"
    args = argparse.Namespace(
        variant=None,
        mode="vae",
        reference=str(ref),
        output=str(out),
        examples=str(tmp_path / "ex.npz"),
        features=None,
    )
    evaluation.eval_recon(args, cfg)
    # the decoding loop shows its progress in the job's log, image by image of the validation split
    progress = caplog.text  # LogProgress: stderr is not a terminal under pytest
    assert f"reconstruct: {CLASSES * 3}/{CLASSES * 3} img (100.0%)" in progress, progress
    frame = pd.read_csv(out)
    assert set(frame.variant) == {VAE[0]} and set(frame.setting) == {VAE[1]}
    got = _metrics(out)
    assert set(got) == {"rFID", "PSNR", "SSIM", "LPIPS", "class_acc", "bpp"}
    examples = np.load(tmp_path / "ex.npz")
    assert len(examples["recon"]) == CLASSES * 3  # every validation image
    assert got["PSNR"] == pytest.approx(psnr_uint8(examples["original"], examples["recon"]))
    latent = cfg.pretrained.vae.arch["latent_channels"] * (SIZE // 4) ** 2  # 3 blocks: f = 4
    assert got["bpp"] == pytest.approx(16 * latent / SIZE**2)
    with pytest.raises(ValueError, match="drop --variant b18"):
        evaluation.eval_recon(argparse.Namespace(**{**vars(args), "variant": "b18"}), cfg)


def test_a_reference_batch_of_another_extractor_is_refused(setup, tmp_path):
    cfg, _, _, _ = setup
    bad = tmp_path / "VIRTUAL_2048.npz"
    np.savez(bad, arr_0=np.zeros((3, SIZE, SIZE, 3), np.uint8), mu=np.zeros(2048), sigma=np.eye(2048))
    cfg = dataclasses.replace(cfg, evaluation=dataclasses.replace(cfg.evaluation, fid_reference=str(bad)))
    setup_ = build_feature_extractor("classifier", paths.teacher_dir(cfg.out, "inception"))
    with pytest.raises(
        ValueError, match="2048-dimensional statistics.*pretrained.inception.source: pretrained"
    ):
        reference.generation_reference(cfg, setup_, np.zeros((4, 512)))


@pytest.mark.parametrize(("mode", "decoded"), [("refiner", "steps=1"), ("diffusion", "steps=3 shift=1.0")])
def test_a_tokenizer_records_how_it_decoded_and_its_feature_clustering(setup, tmp_path, mode, decoded):
    """Every image metric's protocol names the decoder's steps (1 for the refiner; the Euler steps and
    shift of the flow sampler), feature_silhouette is scikit-learn's silhouette of the pooled encoder
    features (the npz Fig. 6 draws) by class, and the quantizer's soft entropies are recorded."""
    from sklearn.metrics import silhouette_score

    from semtok.models.factory import build_tokenizer

    cfg, _, ref, _ = setup
    cfg = dataclasses.replace(cfg, tokenizer_variants={"b18": {"sampler": {"steps": 3}}})
    torch.manual_seed(0)
    tok = build_tokenizer(cfg, "b18")
    if mode == "refiner":
        tok.decoder.enable_refiner()
        tok.register_to_config(decoder_config=registry.public_config(tok.decoder.config))
    tok.save_pretrained(paths.tokenizer_dir(cfg.out, "b18", "stage2" if mode == "refiner" else "stage1"))
    out, features = tmp_path / "b18.csv", tmp_path / "features.npz"
    args = argparse.Namespace(
        variant="b18",
        mode=mode,
        reference=str(ref),
        output=str(out),
        examples=str(tmp_path / "ex.npz"),
        features=str(features),
    )
    evaluation.eval_recon(args, cfg)
    protocols = _protocols(out)
    for metric in ("rFID", "PSNR", "SSIM", "LPIPS", "class_acc"):
        assert protocols[metric].endswith(f" {decoded}"), (metric, protocols[metric])
    with np.load(features) as f:
        pooled, labels = f["features"], f["labels"]
    assert len(np.unique(labels)) == CLASSES
    expected = silhouette_score(pooled, labels)
    got = _metrics(out)
    assert got["feature_silhouette"] == pytest.approx(expected)
    silhouette = f"definition=sklearn-silhouette-euclidean-by-class n={CLASSES * 3}"
    assert protocols["feature_silhouette"] == silhouette
    # the quantizer's soft entropies of the validation tokens: the per-sample one is a mean over tokens,
    # so batch by batch it equals that of all tokens at once; the codebook one is at least it, at most d ln 2
    latents = torch.cat([b["latent"] for b in reference.val_batches(cfg, 64, features=("latents",))])
    with torch.no_grad():
        whole = tok.eval().quantize(latents)[1]
    assert got["entropy_per_sample"] == pytest.approx(float(whole.per_sample_entropy), rel=1e-4)
    assert got["entropy_per_sample"] <= got["entropy_codebook"] <= 18 * np.log(2)
    entropy = f"definition=soft-quantizer-entropy-nats tau=1.0 batch=5 n={CLASSES * 3}"
    assert protocols["entropy_codebook"] == entropy
