import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
import torchvision
from torch.utils.data import Dataset
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from semtok import paths
from semtok.eval.features import (
    CLASSIFIER_EXTRACTOR_NAME,
    ClassifierConfig,
    ClassifierFeatureExtractor,
    bootstrapped_classifier,
    build_classifier,
    build_feature_extractor,
    extract_features,
    inception_weights_path,
    load_classifier,
    random_inception,
    save_classifier,
    top1_accuracy,
    torchvision_resnet50,
)
from semtok.eval.metrics import frechet_distance, inception_score, precision_recall, stats_from_features

ROOT = Path(__file__).resolve().parents[2]
TINY = ClassifierConfig(layers=(1, 1, 1, 1), num_classes=5, image_size=32)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("classifier")
    save_classifier(build_classifier(TINY), TINY, directory)
    return directory


class UInt8Images(Dataset):
    """(N, 3, H, W) uint8 tensors, the input torch-fidelity expects from a Dataset."""

    def __init__(self, images: np.ndarray):
        self.images = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _images(n: int, seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def test_resnet50_config_builds_torchvision_resnet50():
    config = ClassifierConfig(block="bottleneck", layers=[3, 4, 6, 3], width_per_group=64, num_classes=1000)
    model = build_classifier(config)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision resnet50


def test_config_rejects_unknown_keys_by_name():
    with pytest.raises(ValueError, match="depth"):
        ClassifierConfig.from_dict({"layers": [1, 1, 1, 1], "num_classes": 3, "depth": 4})
    with pytest.raises(ValueError, match="layers"):
        ClassifierConfig(layers=(1, 1, 1), num_classes=3)


def test_save_load_round_trip(classifier_dir):
    model, config = load_classifier(classifier_dir)
    assert config == TINY
    torch.manual_seed(0)
    original = build_classifier(TINY)
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)


def test_classifier_extractor_is_registered_and_features_have_right_shape(classifier_dir):
    assert FEATURE_EXTRACTORS_REGISTRY[CLASSIFIER_EXTRACTOR_NAME] is ClassifierFeatureExtractor
    setup = build_feature_extractor("classifier", classifier_dir)
    weights_sha = hashlib.sha256((classifier_dir / "model.safetensors").read_bytes()).hexdigest()
    assert setup.protocol == f"classifier:{weights_sha[:8]}"
    assert setup.feature_names == {"fid": "pool", "is": "logits"}
    images = _images(6, seed=0)
    feats = extract_features(setup.extractor, images, batch_size=4)
    assert feats["pool"].shape == (6, 512) and feats["logits"].shape == (6, 5)
    # logits are the classifier's own prediction on the resized, ImageNet-normalised input
    model, _ = load_classifier(classifier_dir)
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True) / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[
        :, None, None
    ]
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(feats["logits"]), model(x), rtol=1e-4, atol=1e-4)


def test_extract_features_accepts_an_iterator_of_batches(classifier_dir):
    extractor = build_feature_extractor("classifier", classifier_dir).extractor
    images = _images(5, seed=1)
    whole = extract_features(extractor, images, batch_size=5)
    batched = extract_features(extractor, iter([images[:2], images[2:]]))
    for name in ("pool", "logits"):
        np.testing.assert_allclose(batched[name], whole[name], rtol=1e-5, atol=1e-5)


def test_bottleneck_classifier_pool_dimension(tmp_path):
    config = ClassifierConfig(
        block="bottleneck", layers=(1, 1, 1, 1), width_per_group=16, num_classes=3, image_size=32
    )
    save_classifier(build_classifier(config), config, tmp_path)
    feats = extract_features(build_feature_extractor("classifier", tmp_path).extractor, _images(2, seed=2))
    assert feats["pool"].shape == (2, 2048) and feats["logits"].shape == (2, 3)


def test_torch_fidelity_calculate_metrics_with_classifier(classifier_dir):
    generated, real = _images(40, seed=3), _images(50, seed=4)
    metrics = torch_fidelity.calculate_metrics(
        input1=UInt8Images(generated),
        input2=UInt8Images(real),
        feature_extractor=CLASSIFIER_EXTRACTOR_NAME,
        feature_extractor_weights_path=str(classifier_dir),
        fid=True,
        isc=True,
        prc=True,
        isc_splits=4,
        cuda=False,
        batch_size=16,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    assert np.isfinite(metrics["frechet_inception_distance"]) and metrics["frechet_inception_distance"] > 0
    # our own math on our own extraction agrees with torch-fidelity's
    extractor = build_feature_extractor("classifier", classifier_dir).extractor
    gen, ref = extract_features(extractor, generated), extract_features(extractor, real)
    is_mean, _ = inception_score(gen["logits"], splits=4)
    assert is_mean == pytest.approx(metrics["inception_score_mean"], rel=1e-5)
    precision, recall = precision_recall(ref["pool"], gen["pool"], k=3)
    assert (precision, recall) == pytest.approx((metrics["precision"], metrics["recall"]))
    fid = frechet_distance(stats_from_features(gen["pool"]), stats_from_features(ref["pool"]))
    assert fid == pytest.approx(metrics["frechet_inception_distance"], rel=1e-5)


@pytest.fixture
def random_inception_weights(tmp_path):
    """A randomly initialised torch-fidelity Inception saved as a weights file (no download)."""
    path = tmp_path / "inception.pth"
    torch.save(random_inception(0).state_dict(), path)
    return path


def test_the_random_inception_stand_in_is_torch_fidelitys_class_seeded(random_inception_weights):
    """The offline stand-in (pretrained.inception.source: random) is torch-fidelity's Inception class with
    weights drawn from the run's seed: the same network in every job, and loading its weights into the
    class the real way gives the same features."""
    setup = build_feature_extractor("inception", random_seed=0)
    assert type(setup.extractor) is tf_inception.FeatureExtractorInceptionV3
    assert setup.protocol.startswith("inception-v3-compat-random:")
    assert setup.protocol == build_feature_extractor("inception", random_seed=0).protocol
    assert setup.protocol != build_feature_extractor("inception", random_seed=1).protocol
    images = _images(2, seed=5, size=64)
    loaded = build_feature_extractor("inception", random_inception_weights)
    np.testing.assert_array_equal(
        extract_features(setup.extractor, images)["2048"], extract_features(loaded.extractor, images)["2048"]
    )
    # the constructor's weight loading is restored for the real weights afterwards
    assert tf_inception.FeatureExtractorInceptionV3.load_state_dict is torch.nn.Module.load_state_dict


def test_inception_extractor_from_local_weights(random_inception_weights):
    setup = build_feature_extractor("inception", random_inception_weights)
    weights_sha = hashlib.sha256(random_inception_weights.read_bytes()).hexdigest()
    assert setup.protocol == f"inception-v3-compat:{weights_sha[:8]}"
    assert setup.feature_names == {"fid": "2048", "is": "logits_unbiased"}
    feats = extract_features(setup.extractor, _images(2, seed=5, size=32))
    assert feats["2048"].shape == (2, 2048) and feats["logits_unbiased"].shape == (2, 1008)


def test_inception_weights_resolved_from_torch_hub_cache(random_inception_weights, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(random_inception_weights.read_bytes())
    assert inception_weights_path(None) == cached
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        inception_weights_path(tmp_path / "missing.pth")


def test_top1_accuracy_scores_the_argmax_against_the_labels(classifier_dir):
    classifier = bootstrapped_classifier(classifier_dir)
    images = _images(9, seed=6, size=32)
    with torch.no_grad():
        predicted = classifier(torch.as_tensor(images).permute(0, 3, 1, 2)).argmax(1).numpy()
    labels = predicted.copy()
    labels[:3] = (labels[:3] + 1) % TINY.num_classes
    assert top1_accuracy(classifier, images, labels, batch_size=4) == pytest.approx(6 / 9)
    with pytest.raises(ValueError, match="as many labels as images"):
        top1_accuracy(classifier, images, labels[:5])


def test_class_acc_classifier_offline_is_the_stand_in_and_on_a_cluster_resnet50(classifier_dir, monkeypatch):
    from semtok import registry
    from semtok.config import load

    cfg = load(ROOT / "config/config.yaml", [f"out_dir={classifier_dir.parent}"])
    monkeypatch.setattr(paths, "teacher_dir", lambda out, name: classifier_dir)
    offline = registry.load_accuracy_classifier(cfg)
    assert offline.protocol == build_feature_extractor("classifier", classifier_dir).protocol
    paper = load(ROOT / "config/paper.yaml")
    built, architecture = {}, torchvision.models.resnet50

    def resnet50(weights):  # no download: the architecture with random weights
        built["weights"] = weights
        return architecture(weights=None)

    monkeypatch.setattr(torchvision.models, "resnet50", resnet50)
    cluster = registry.load_accuracy_classifier(paper)
    assert built["weights"] is torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    assert cluster.protocol == "resnet50-IMAGENET1K_V2"
    x = torch.as_tensor(_images(2, seed=7, size=256)).permute(0, 3, 1, 2)
    assert cluster.preprocess(x).shape == (2, 3, 224, 224)
    assert cluster(x).shape == (2, 1000)
    with pytest.raises(ValueError, match="IMAGENET1K_V9"):
        torchvision_resnet50("IMAGENET1K_V9")
    standin = registry.load_accuracy_classifier(
        load(ROOT / "config/paper.yaml", ["pretrained.inception.source=random"])
    )
    assert standin.protocol.startswith("resnet50-random:") and isinstance(
        standin.model, torchvision.models.ResNet
    )
    assert standin(x).shape == (2, 1000) and standin.preprocess(x).shape == (2, 3, 224, 224)
    again = torchvision_resnet50("IMAGENET1K_V2", random_seed=0)
    assert again.protocol == standin.protocol != torchvision_resnet50("IMAGENET1K_V2", random_seed=1).protocol
