"""Entry points of `workflow/rules/evaluation.smk` (SPEC §5): the reference features of the validation
images (`eval-reference`), the reconstruction metrics of a tokenizer or of the frozen VAE
(`eval-recon`), the generation metrics of a sample file (`eval-gen`). Each writes a tidy metrics CSV
(semtok/eval/records.py) whose `config_hash` names the config sections the numbers depend on; the
metrics themselves are the library's (semtok/eval/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from semtok import keys, paths, registry
from semtok.config import Config
from semtok.data.imagenet import num_classes
from semtok.data.images import to_uint8
from semtok.eval.features import extract_features, top1_accuracy
from semtok.eval.gen import generation_metrics, generator_parameters, read_samples
from semtok.eval.metrics import stats_from_features
from semtok.eval.recon import (
    MODES,
    code_metrics,
    decoding_fields,
    image_metrics,
    latent_bits,
    reconstruct,
    tokenizer_decoder,
    vae_decoder,
)
from semtok.eval.records import ORIGINAL, VAE, protocol, write_metrics
from semtok.eval.reference import (
    data_tag,
    fid_setup,
    generation_reference,
    on_device,
    val_batches,
    write_reference_standin,
)
from semtok.jobs import EntryPoint
from semtok.utils.devices import job_device
from semtok.utils.io import save_npz


def reference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="the reference .npz to write")
    parser.add_argument("--metrics", required=True, help="CSV of the validation images' class_acc")


def compute_reference(cfg: Config, output: Path, metrics: Path) -> dict[str, Any]:
    """The features of the validation images and of the generation reference (`output`, the layout of
    semtok.eval.reference.load_reference), and the classifier's accuracy on the validation images
    (`metrics`, CSV variant `original`)."""
    setup = fid_setup(cfg)
    batches = list(val_batches(cfg, cfg.evaluation.batch_size))
    images = np.concatenate([to_uint8((b["image"] + 1) / 2) for b in batches])
    labels = np.concatenate([b["cls"].numpy() for b in batches])
    val_fid = extract_features(setup.extractor, images, batch_size=cfg.evaluation.batch_size)
    val_fid = val_fid[setup.feature_names["fid"]]
    gen_fid, gen_stats, gen_name = generation_reference(cfg, setup, val_fid)
    val_stats = stats_from_features(val_fid)
    save_npz(
        output,
        fid=val_fid,
        mu=val_stats.mu,
        sigma=val_stats.sigma,
        protocol=np.asarray(setup.protocol),
        gen_fid=gen_fid,
        gen_mu=gen_stats.mu,
        gen_sigma=gen_stats.sigma,
        gen_ref=np.asarray(gen_name),
    )
    classifier = on_device(cfg, registry.load_accuracy_classifier(cfg))
    accuracy = top1_accuracy(classifier, images, labels, cfg.evaluation.batch_size)
    write_metrics(
        metrics,
        run_id=cfg.run_id,
        kind="recon",
        variant=ORIGINAL[0],
        setting=ORIGINAL[1],
        values={"class_acc": accuracy},
        protocols={
            "class_acc": protocol(
                classifier=classifier.protocol,
                labels="true",
                classes=num_classes(cfg),
                data=data_tag(cfg),
                n=len(images),
            )
        },
        config_hash=keys.digest(keys.reference(cfg)),
        n_samples=len(images),
    )
    return {
        "images": len(images),
        "protocol": setup.protocol,
        "generation_reference": gen_name,
        "class_acc": accuracy,
        "output": str(output),
    }


def eval_reference(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return compute_reference(cfg, Path(args.output), Path(args.metrics))


def standin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="the stand-in reference batch (.npz) to write")


def reference_standin(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    return write_reference_standin(cfg, Path(args.output))


def recon_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", help="tokenizer variant (not with --mode vae)")
    parser.add_argument("--mode", choices=MODES, default="refiner")
    parser.add_argument("--reference", required=True, help="validation features (semtok eval-reference)")
    parser.add_argument("--output", required=True, help="metrics CSV")
    parser.add_argument("--examples", required=True, help="npz of a few originals and reconstructions")
    parser.add_argument("--features", help="npz of pooled encoder features (Fig. 6); refiner mode")


def eval_recon(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    device = job_device(cfg.compute)
    if args.mode == "vae":
        if args.variant not in (None, VAE[0]):
            raise ValueError(f"--mode vae evaluates the VAE alone; drop --variant {args.variant}")
        variant, setting = VAE
        rec = reconstruct(cfg, vae_decoder(cfg, device), device)
        extra = latent_bits(cfg, rec)
        decoding = None
        config_hash = keys.digest(keys.recon(cfg, None, "vae"))
    else:
        if args.variant is None:
            raise ValueError(f"--mode {args.mode} needs --variant (a tokenizer variant)")
        variant, setting = args.variant, args.mode
        decode, tok = tokenizer_decoder(cfg, variant, args.mode, device)
        rec = reconstruct(cfg, decode, device)
        extra = code_metrics(cfg, tok, rec)
        decoding = decoding_fields(cfg, variant, args.mode)
        config_hash = keys.digest(keys.recon(cfg, variant, args.mode))
    values, protocols = image_metrics(cfg, rec, Path(args.reference), device, decoding)
    values, protocols = {**values, **extra[0]}, {**protocols, **extra[1]}
    write_metrics(
        Path(args.output),
        run_id=cfg.run_id,
        kind="recon",
        variant=variant,
        setting=setting,
        values=values,
        protocols=protocols,
        config_hash=config_hash,
        n_samples=len(rec.original),
    )
    k = cfg.evaluation.grid_images
    save_npz(Path(args.examples), original=rec.original[:k], recon=rec.recon[:k])
    if args.features:
        if rec.pooled is None:
            raise ValueError("--features needs a tokenizer (mode refiner or diffusion)")
        m = cfg.evaluation.tsne_images
        save_npz(Path(args.features), features=rec.pooled[:m], labels=rec.labels[:m])
    return {"variant": variant, "mode": setting, **values}


def gen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, help="generator variant")
    parser.add_argument("--setting", required=True, help="sampling setting of the sample file")
    parser.add_argument("--samples", required=True, help="npz with arr_0 (N, H, W, 3) uint8")
    parser.add_argument("--reference", required=True, help="validation features (semtok eval-reference)")
    parser.add_argument("--output", required=True, help="metrics CSV")


def eval_gen(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    images, labels = read_samples(Path(args.samples))
    values, protocols = generation_metrics(cfg, images, labels, Path(args.reference))
    values["params"] = float(generator_parameters(paths.generator_dir(cfg.out, args.variant)))
    protocols["params"] = protocol(definition="safetensors-element-count")
    config_hash = keys.digest(keys.gen(cfg, args.variant, args.setting))
    write_metrics(
        Path(args.output),
        run_id=cfg.run_id,
        kind="gen",
        variant=args.variant,
        setting=args.setting,
        values=values,
        protocols=protocols,
        config_hash=config_hash,
        n_samples=len(images),
    )
    return {"variant": args.variant, "setting": args.setting, **values}


ENTRY_POINTS = {
    "eval-reference": EntryPoint(reference_arguments, eval_reference),
    "reference-standin": EntryPoint(standin_arguments, reference_standin),
    "eval-recon": EntryPoint(recon_arguments, eval_recon),
    "eval-gen": EntryPoint(gen_arguments, eval_gen),
}
