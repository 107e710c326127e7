"""Feature extractors for FID, IS and Precision/Recall (SPEC §5).

Two kinds, both torch-fidelity `FeatureExtractorBase` modules taking uint8 (B, 3, H, W):
- "inception": torch-fidelity's port of the TF Inception-v3 used by ADM's evaluator ('2048' pool
  features for FID/PR, 'logits_unbiased' for IS). Weights come from a local file, or from torch
  hub's cache (`$TORCH_HOME/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth`), where a
  cluster can prefetch them; they are downloaded there only when missing.
- "classifier": an offline stand-in, a torchvision ResNet trained on the pipeline's own data
  ('pool' = global-pooled penultimate activations for FID/PR, 'logits' for IS). Registered with
  torch-fidelity as "semtok-classifier", so `calculate_metrics(feature_extractor=...)` accepts it.

Each build returns a protocol string ("inception-v3-compat:<sha8>", "classifier:<sha8>", sha8 = the
first 8 hex digits of the weights file's SHA-256) to record beside every number it produces.

The class_acc metric uses an `ImageClassifier` (uint8 images → logits): a bootstrapped classifier
(`bootstrapped_classifier`) or torchvision's ResNet-50 with ImageNet weights and their own
preprocessing (`torchvision_resnet50`); `top1_accuracy` scores it against labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import urlparse

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.helpers import text_to_dtype
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from semtok.data.images import IMAGENET_MEAN, IMAGENET_STD
from semtok.utils.progress import progress

CLASSIFIER_EXTRACTOR_NAME = "semtok-classifier"
INCEPTION_EXTRACTOR_NAME = "inception-v3-compat"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    """torchvision ResNet hyperparameters; ResNet-50 is block="bottleneck", layers=(3, 4, 6, 3).

    image_size: side the classifier was trained at; inputs are resized to it.
    """

    layers: tuple[int, int, int, int]
    num_classes: int
    block: Literal["basic", "bottleneck"] = "basic"
    width_per_group: int = 64
    image_size: int = 224

    def __post_init__(self) -> None:
        if len(self.layers) != 4 or not all(isinstance(n, int) and n > 0 for n in self.layers):
            raise ValueError(f"classifier config 'layers' must be 4 positive ints, got {self.layers}")
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"classifier config 'block' must be 'basic' or 'bottleneck', got {self.block!r}")
        object.__setattr__(self, "layers", tuple(self.layers))

    @classmethod
    def from_dict(cls, values: dict, source: str = "classifier config") -> ClassifierConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "layers": list(self.layers)}


def build_classifier(config: ClassifierConfig) -> torchvision.models.ResNet:
    """A randomly initialised torchvision ResNet of the configured shape."""
    block = {
        "basic": torchvision.models.resnet.BasicBlock,
        "bottleneck": torchvision.models.resnet.Bottleneck,
    }
    return torchvision.models.ResNet(
        block[config.block],
        list(config.layers),
        num_classes=config.num_classes,
        width_per_group=config.width_per_group,
    )


def save_classifier(
    model: torchvision.models.ResNet, config: ClassifierConfig, directory: str | Path
) -> None:
    """Write `config.json` and `model.safetensors` into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    safetensors.torch.save_file(
        {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()},
        str(directory / WEIGHTS_FILE),
    )


def load_classifier(directory: str | Path) -> tuple[torchvision.models.ResNet, ClassifierConfig]:
    """Inverse of `save_classifier`: the model in eval mode, on CPU, and its config."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    config = ClassifierConfig.from_dict(json.loads(config_path.read_text()), source=str(config_path))
    model = build_classifier(config)
    model.load_state_dict(safetensors.torch.load_file(str(directory / WEIGHTS_FILE)))
    return model.eval(), config


def file_digest(path: str | Path) -> str:
    """First 8 hex digits of the file's SHA-256."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:8]


class ResizeNormalise(nn.Module):
    """uint8 (B, 3, H, W) → float32 (B, 3, size, size): bilinear antialiased resize (skipped at the
    right size), then ImageNet mean/std normalisation — the input of the bootstrapped classifiers."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", 255.0 * torch.tensor(IMAGENET_MEAN)[None, :, None, None])
        self.register_buffer("std", 255.0 * torch.tensor(IMAGENET_STD)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        x = x.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
            )
        return (x - self.mean) / self.std


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor around a `save_classifier` directory.

    Features: 'pool' (B, 512·expansion) global-pooled penultimate activations (FID, KID, PR) and
    'logits' (B, num_classes), the classifier's own logits with bias (IS). Input: uint8
    (B, 3, H, W), resized (bilinear, antialiased) to config.image_size, ImageNet-normalised.
    """

    def __init__(
        self,
        name: str,
        features_list: list[str],
        feature_extractor_weights_path: str | Path | None = None,
        feature_extractor_internal_dtype: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(
                f"{name} needs feature_extractor_weights_path: a directory written by save_classifier "
                f"({CONFIG_FILE} + {WEIGHTS_FILE})"
            )
        self.model, self.config = load_classifier(feature_extractor_weights_path)
        self.preprocess = ResizeNormalise(self.config.image_size)
        self.internal_dtype = text_to_dtype(feature_extractor_internal_dtype, "float32")
        self.to(self.internal_dtype)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (B, 3, H, W) uint8 → features in the order of `features_list`, float32."""
        x = self.preprocess(x).to(self.internal_dtype)
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        pool = torch.flatten(m.avgpool(x), 1)
        features = {"pool": pool, "logits": m.fc(pool)}
        return tuple(features[name].float() for name in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return "pool", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return True

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)


if CLASSIFIER_EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(CLASSIFIER_EXTRACTOR_NAME, ClassifierFeatureExtractor)


def inception_weights_path(path: str | Path | None = None) -> Path:
    """The Inception weights file to use: `path` if given, else torch hub's cache entry, which is
    downloaded from torch-fidelity's release when missing (needs internet; prefetch it there, or pass
    `path`, on offline nodes)."""
    if path is None:
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(URL_INCEPTION_V3).path).name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(URL_INCEPTION_V3, str(path))
            except OSError as err:
                raise FileNotFoundError(
                    f"Inception weights not cached at {path} and the download from {URL_INCEPTION_V3} failed "
                    f"({err}); prefetch the file there or pass its path"
                ) from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights file not found: {path}")
    return path


def random_inception(
    seed: int, name: str = INCEPTION_EXTRACTOR_NAME, features: Iterable[str] = ("2048",)
) -> FeatureExtractorInceptionV3:
    """torch-fidelity's Inception-v3 extractor with random weights drawn from `seed`: the stand-in for the
    downloaded weights in offline runs at the paper's shapes (config/paper-smoke.yaml): the same class,
    layers and feature names, so every code path of the real one runs. torch-fidelity's constructor
    always loads a weights file; here that load is skipped and the layers keep PyTorch's default init."""
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    cls = tf_inception.FeatureExtractorInceptionV3
    own = cls.__dict__.get("load_state_dict")
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
        empty = Path(tmp) / "no-weights.pth"
        torch.save({}, empty)
        torch.manual_seed(seed)
        cls.load_state_dict = lambda self, state, *args, **kwargs: None
        try:
            model = cls(name, list(features), feature_extractor_weights_path=str(empty))
        finally:
            if own is None:
                del cls.load_state_dict
            else:
                cls.load_state_dict = own
    return model


def state_digest(module: nn.Module) -> str:
    """First 8 hex digits of the SHA-256 of a module's tensors (names, dtypes, values), for protocols of
    weights that live in memory only."""
    sha = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        sha.update(key.encode())
        sha.update(str(tensor.dtype).encode())
        sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()[:8]


class FeatureSetup(NamedTuple):
    """A ready extractor, which of its features each metric uses ({"fid": ..., "is": ...}; PR uses
    the FID features), and the protocol string to record with the numbers."""

    extractor: FeatureExtractorBase
    feature_names: dict[str, str]
    protocol: str


def build_feature_extractor(
    kind: Literal["inception", "classifier"],
    path: str | Path | None = None,
    device: torch.device | str = "cpu",
    internal_dtype: str | None = None,
    random_seed: int | None = None,
) -> FeatureSetup:
    """kind "inception": path = weights file or None (torch hub cache), or random weights drawn from
    `random_seed` (`random_inception`); kind "classifier": path = a `save_classifier` directory
    (required). Both provide their FID and IS features."""
    if kind == "inception" and random_seed is not None:
        cls = FeatureExtractorInceptionV3
        names = {"fid": cls.get_default_feature_layer_for_metric("fid"), "is": "logits_unbiased"}
        extractor = random_inception(random_seed, features=sorted(set(names.values())))
        extractor.feature_extractor_internal_dtype = text_to_dtype(internal_dtype, "float32")
        return FeatureSetup(
            extractor.to(device), names, f"inception-v3-compat-random:{state_digest(extractor)}"
        )
    if kind == "inception":
        source = weights = inception_weights_path(path)
        # torch-fidelity unpickles this file itself; first make sure it holds nothing but tensors.
        torch.load(weights, map_location="cpu", weights_only=True)
        cls, name, label = FeatureExtractorInceptionV3, INCEPTION_EXTRACTOR_NAME, "inception-v3-compat"
    elif kind == "classifier":
        if path is None:
            raise ValueError("the classifier feature extractor needs the directory of a saved classifier")
        source, weights = Path(path), Path(path) / WEIGHTS_FILE
        cls, name, label = ClassifierFeatureExtractor, CLASSIFIER_EXTRACTOR_NAME, "classifier"
    else:
        raise ValueError(f"unknown feature extractor kind {kind!r}; expected 'inception' or 'classifier'")
    names = {
        "fid": cls.get_default_feature_layer_for_metric("fid"),
        "is": cls.get_default_feature_layer_for_metric("isc"),
    }
    extractor = cls(
        name,
        sorted(set(names.values())),
        feature_extractor_weights_path=str(source),
        feature_extractor_internal_dtype=internal_dtype,
    )
    return FeatureSetup(extractor.to(device), names, f"{label}:{file_digest(weights)}")


def extract_features(
    extractor: FeatureExtractorBase,
    images: np.ndarray | torch.Tensor | Iterable[np.ndarray | torch.Tensor],
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Run `extractor` over images on its own device.

    images: (N, H, W, 3) uint8, split into `batch_size` batches, or an iterable of such batches
    (used as given). Returns {feature name: (N, D_name) float32}.
    """
    if isinstance(images, np.ndarray | torch.Tensor):
        total, batches = len(images), torch.as_tensor(images).split(batch_size)
    else:
        total, batches = None, images
    device = next(extractor.parameters()).device
    collected: dict[str, list[torch.Tensor]] = defaultdict(list)
    with torch.no_grad(), progress(total=total, unit="img", desc="features") as bar:
        for batch in batches:
            batch = torch.as_tensor(batch)
            features = extractor(batch.permute(0, 3, 1, 2).to(device))
            for name, value in extractor.convert_features_tuple_to_dict(features).items():
                collected[name].append(value.cpu())
            bar.update(len(batch))
    return {name: torch.cat(values).numpy() for name, values in collected.items()}


class ImageClassifier(nn.Module):
    """A frozen classifier on uint8 images, for the `class_acc` metric.

    preprocess: uint8 (B, 3, H, W) → the network's float input (B, 3, h, w); model: → logits
    (B, classes). `protocol` names the network and its weights for the metric CSVs.
    """

    def __init__(self, model: nn.Module, preprocess: nn.Module, protocol: str) -> None:
        super().__init__()
        self.model, self.preprocess, self.protocol = model, preprocess, protocol
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: uint8 (B, 3, H, W) → logits (B, classes) float32."""
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        return self.model(self.preprocess(x)).float()


@torch.no_grad()
def top1_accuracy(
    classifier: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    batch_size: int = 64,
) -> float:
    """Fraction of images (N, H, W, 3) uint8 whose arg-max class is `labels` (N,) int, computed on the
    classifier's device."""
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"need as many labels as images (> 0), got {len(labels)} labels, {len(images)} images"
        )
    device = next(classifier.parameters()).device
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        predicted = classifier(x.permute(0, 3, 1, 2).to(device)).argmax(dim=1).cpu()
        correct += int((predicted == y).sum())
    return correct / len(labels)


def bootstrapped_classifier(directory: str | Path) -> ImageClassifier:
    """A `save_classifier` directory as the class_acc classifier (protocol `classifier:<sha8>`)."""
    model, config = load_classifier(directory)
    protocol = f"classifier:{file_digest(Path(directory) / WEIGHTS_FILE)}"
    return ImageClassifier(model, ResizeNormalise(config.image_size), protocol)


def torchvision_resnet50(weights_name: str, random_seed: int | None = None) -> ImageClassifier:
    """torchvision's ResNet-50 with ImageNet weights `weights_name` (a `ResNet50_Weights` member,
    downloaded into TORCH_HOME on first use) and those weights' own preprocessing (resize, centre
    crop 224 px, ImageNet normalisation); protocol `resnet50-<weights_name>`. With `random_seed`, the
    same network and preprocessing with random weights drawn from the seed (the offline stand-in of runs
    at the paper's shapes; protocol `resnet50-random:<sha8>`)."""
    try:
        weights = torchvision.models.ResNet50_Weights[weights_name]
    except KeyError:
        known = [w.name for w in torchvision.models.ResNet50_Weights]
        raise ValueError(f"unknown torchvision ResNet50_Weights {weights_name!r}; known: {known}") from None
    if random_seed is None:
        return ImageClassifier(
            torchvision.models.resnet50(weights=weights), weights.transforms(), f"resnet50-{weights_name}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_seed)
        model = torchvision.models.resnet50(weights=None)
    return ImageClassifier(model, weights.transforms(), f"resnet50-random:{state_digest(model)}")
