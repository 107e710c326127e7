"""Generation metrics (SPEC §5), computed by the `eval-gen` job (semtok/jobs/evaluation.py) for a
sample file of a generator.

gFID and Precision/Recall (k = `evaluation.pr_k`) against the generation reference of
`semtok eval-reference` — ADM's `VIRTUAL_imagenet256_labeled.npz` (its `mu`/`sigma`; the features of
its `arr_0` images) when `evaluation.fid_reference` is set, else the validation images; Inception
Score over 10 splits of the shuffled samples; `class_acc`, the frozen classifier's accuracy on the
samples against the labels they were requested with; the generator's parameter count. The protocol
column records which extractor, reference and sample count produced each number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semtok import registry
from semtok.config import Config
from semtok.data.imagenet import num_classes
from semtok.eval.features import extract_features, top1_accuracy
from semtok.eval.metrics import frechet_distance, inception_score, precision_recall, stats_from_features
from semtok.eval.records import protocol
from semtok.eval.reference import fid_setup, load_reference, on_device

IS_SPLITS = 10


def generator_parameters(folder: Path) -> int:
    """Parameter count of a saved generator, read from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            total += sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    if total == 0:
        raise FileNotFoundError(f"no safetensors weights in {folder}")
    return total


def read_samples(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An ADM-style sample file: `arr_0` (N, H, W, 3) uint8 and the requested `labels` (N,)."""
    with np.load(path) as f:
        missing = [key for key in ("arr_0", "labels") if key not in f.files]
        if missing:
            raise ValueError(
                f"{path}: missing key(s) {missing} (found {f.files}); `semtok sample` writes both"
            )
        images, labels = f["arr_0"], f["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{path}: labels {labels.shape} do not match {len(images)} images")
    return images, labels


def generation_metrics(
    cfg: Config, images: np.ndarray, labels: np.ndarray, reference: Path
) -> tuple[dict[str, float], dict[str, str]]:
    """gFID, IS, precision/recall and class_acc of samples (N, H, W, 3) uint8 with requested labels
    (N,), and the protocol of each."""
    setup = fid_setup(cfg)
    ref = load_reference(reference)
    if ref.protocol != setup.protocol:
        raise RuntimeError(
            f"{reference} was made with {ref.protocol}, not {setup.protocol}: rerun eval-reference"
        )
    feats = extract_features(setup.extractor, images, batch_size=cfg.evaluation.batch_size)
    fake = feats[setup.feature_names["fid"]]
    is_mean, is_std = inception_score(feats[setup.feature_names["is"]], splits=IS_SPLITS)
    precision, recall = precision_recall(ref.gen_fid, fake, k=cfg.evaluation.pr_k)
    classifier = on_device(cfg, registry.load_accuracy_classifier(cfg))
    n = len(images)
    values = {
        "gFID": frechet_distance(stats_from_features(fake), ref.gen_stats),
        "IS": is_mean,
        "IS_std": is_std,
        "Precision": precision,
        "Recall": recall,
        "class_acc": top1_accuracy(classifier, images, labels, cfg.evaluation.batch_size),
    }
    pr = protocol(fid=setup.protocol, ref=ref.gen_name, k=cfg.evaluation.pr_k, n=n)
    protocols = {
        "gFID": protocol(fid=setup.protocol, ref=ref.gen_name, n=n),
        "IS": protocol(fid=setup.protocol, splits=IS_SPLITS, n=n),
        "IS_std": protocol(fid=setup.protocol, splits=IS_SPLITS, n=n),
        "Precision": pr,
        "Recall": pr,
        "class_acc": protocol(
            classifier=classifier.protocol, labels="requested", classes=num_classes(cfg), n=n
        ),
    }
    return values, protocols
