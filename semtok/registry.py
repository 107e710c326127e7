"""One registry for every pretrained component: SD3.5 VAE, SigLIP vision tower, SD3.5-Medium
transformer, LPIPS (VGG), ResNet-50, Inception (FID), LPIPS metric (AlexNet); and the evaluation's
frozen class_acc classifier and ADM reference batch.

Each entry of `cfg.pretrained` says where its weights come from (semtok/config.py,
`ComponentConfig`): a hub id or a local path ("pretrained"), a tiny model of the same class trained
by the `teachers` rule on the configured data ("bootstrap", loaded from `teachers/<name>/` exactly as
real weights are loaded), or random init from `arch` ("random"). `semtok prefetch` downloads every
"pretrained" entry once into `pretrained.cache_dir` for clusters whose compute nodes are offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from semtok import paths
from semtok.config import ComponentConfig, Config, ConfigError

if TYPE_CHECKING:  # torch is imported lazily: the workflow imports this module at every job start
    import torch
    from torch import nn

COMPONENTS = ("vae", "siglip", "sd3", "lpips", "resnet", "inception", "lpips_metric")
BOOTSTRAPPABLE = ("vae", "siglip", "resnet", "inception")


def component(cfg: Config, name: str) -> ComponentConfig:
    if name not in COMPONENTS:
        raise KeyError(f"unknown pretrained component {name!r}; known: {COMPONENTS}")
    return getattr(cfg.pretrained, name)


def bootstrapped(cfg: Config) -> list[str]:
    """Components the `teachers` rule must train for this config."""
    return [n for n in BOOTSTRAPPABLE if component(cfg, n).source == "bootstrap"]


def location(cfg: Config, name: str) -> str:
    """Hub id or local path that `from_pretrained`-style loaders read for component `name`."""
    comp = component(cfg, name)
    if comp.source == "bootstrap":
        if name not in BOOTSTRAPPABLE:
            raise ConfigError(f"pretrained.{name}.source: 'bootstrap' is not supported for {name}")
        return str(paths.teacher_dir(cfg.out, name))
    if comp.source == "pretrained":
        if not comp.id:
            raise ConfigError(
                f"pretrained.{name}.id: a hub id or local path is required for source 'pretrained'"
            )
        return comp.id
    raise ConfigError(f"pretrained.{name}: source 'random' has no location")


def configure_environment(cfg: Config) -> None:
    """Point the hub and torch caches at `pretrained.cache_dir`; honour offline mode. Call once per job."""
    if cfg.pretrained.cache_dir:
        cache = Path(cfg.pretrained.cache_dir).expanduser()
        os.environ.setdefault("HF_HOME", str(cache / "hf"))
        os.environ.setdefault("TORCH_HOME", str(cache / "torch"))
    if cfg.pretrained.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def check_architecture(expected: dict[str, Any], config: Any, setting: str, where: str) -> None:
    """ConfigError naming the first key of the architecture the config states (`setting`, e.g.
    "pretrained.vae.arch") that the pretrained model's config (`config`, loaded from `where`) has another
    value of. The paper config spells out each pretrained network's architecture this way: the runs at
    the paper's shapes build them from it, and a wrong checkpoint is named before any work."""
    for key, value in expected.items():
        found = config.get(key) if hasattr(config, "get") else getattr(config, key, None)
        if (list(found) if isinstance(found, tuple) else found) != value:
            raise ConfigError(
                f"{setting}.{key}: {value!r}, but the pretrained model at {where} has {found!r}"
            )


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------
# SD3.5 VAE (diffusers AutoencoderKL)


def tiny_vae_arch(arch: dict[str, Any], resolution: int) -> dict[str, Any]:
    """AutoencoderKL kwargs for a tiny VAE with SD3.5's interface (f = 2^(blocks-1), 16 channels)."""
    blocks = len(arch.get("block_out_channels", [32, 32, 64, 64]))
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * blocks,
        "up_block_types": ["UpDecoderBlock2D"] * blocks,
        "sample_size": resolution,
        "use_quant_conv": False,
        "use_post_quant_conv": False,
        "scaling_factor": 1.0,
        "shift_factor": 0.0,
        **arch,
    }


def _seeded(cfg: Config, build: Any) -> nn.Module:
    """Build a randomly initialised component identically in every job and process."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build()


def _vae_kwargs(comp: ComponentConfig) -> dict[str, Any]:
    kw = {"subfolder": comp.subfolder} if comp.source == "pretrained" and comp.subfolder else {}
    if comp.revision:
        kw["revision"] = comp.revision
    return kw


def vae_config(cfg: Config) -> dict[str, Any]:
    """The VAE's AutoencoderKL config, without loading weights."""
    from diffusers import AutoencoderKL

    comp = component(cfg, "vae")
    if comp.source == "random":
        return tiny_vae_arch(comp.arch, cfg.data.resolution)
    configure_environment(cfg)
    return dict(AutoencoderKL.load_config(location(cfg, "vae"), **_vae_kwargs(comp)))


def load_vae(cfg: Config) -> nn.Module:
    from diffusers import AutoencoderKL

    comp = component(cfg, "vae")
    if comp.source == "random":
        return _frozen(_seeded(cfg, lambda: AutoencoderKL(**tiny_vae_arch(comp.arch, cfg.data.resolution))))
    model = AutoencoderKL.from_pretrained(location(cfg, "vae"), **_vae_kwargs(comp))
    check_architecture(comp.arch, model.config, "pretrained.vae.arch", location(cfg, "vae"))
    return _frozen(model)


# ---------------------------------------------------------------------------------------------
# SigLIP vision tower (transformers SiglipVisionModel)


def tiny_siglip_config(arch: dict[str, Any]) -> Any:
    from transformers import SiglipVisionConfig

    # Without the attention-pooling head: only the patch features are used (no unused parameters).
    return SiglipVisionConfig(**{"vision_use_head": False, **arch})


def load_siglip(cfg: Config) -> nn.Module:
    from transformers import AutoConfig, SiglipVisionModel

    comp = component(cfg, "siglip")
    if comp.source == "random":
        return _frozen(_seeded(cfg, lambda: SiglipVisionModel(tiny_siglip_config(comp.arch))))
    where = location(cfg, "siglip")
    kw = {"revision": comp.revision} if comp.revision else {}
    model_type = AutoConfig.from_pretrained(where, **kw).model_type
    if model_type == "siglip2":
        raise ConfigError(
            f"pretrained.siglip.id: {where} is a NaFlex SigLIP 2 checkpoint (variable resolution); use a "
            "fixed-resolution one such as google/siglip2-so400m-patch16-256"
        )
    model = SiglipVisionModel.from_pretrained(where, **kw)
    check_architecture(comp.arch, model.config, "pretrained.siglip.arch", where)
    return _frozen(model)


def siglip_preprocess(images: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """images: (B, 3, H, W) in [0, 1] → SigLIP pixel values at its image size, normalised to [-1, 1]."""
    import torch

    size = model.config.image_size
    if images.shape[-1] != size or images.shape[-2] != size:  # float32: no bf16 antialias kernel on CPU
        images = torch.nn.functional.interpolate(
            images.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True
        )
    return images * 2.0 - 1.0


# ---------------------------------------------------------------------------------------------
# SD3.5-Medium transformer (the decoder's initialisation; semtok/models/decoder.py)


def sd3_location(cfg: Config) -> tuple[str, str | None]:
    comp = component(cfg, "sd3")
    return location(cfg, "sd3"), comp.subfolder


# ---------------------------------------------------------------------------------------------
# Perceptual networks


def load_lpips(cfg: Config) -> nn.Module:
    """LPIPS (VGG) for the Stage II perceptual loss (semtok/losses/perceptual.py)."""
    from semtok.losses.perceptual import LPIPS

    comp = component(cfg, "lpips")
    if comp.source == "pretrained":
        return _frozen(LPIPS.pretrained(net=comp.id or "vgg"))
    if comp.source == "random":
        return _frozen(_seeded(cfg, lambda: LPIPS(**comp.arch)))
    raise ConfigError("pretrained.lpips.source: 'bootstrap' is not supported; use 'pretrained' or 'random'")


def load_resnet(cfg: Config) -> nn.Module:
    """ImageNet classifier for the ResNet logit loss (MaskBiT): torchvision ResNet-50, or a tiny
    torchvision ResNet trained on the default data."""
    from semtok.eval.features import build_classifier, load_classifier

    comp = component(cfg, "resnet")
    if comp.source == "pretrained":
        import torchvision

        weights = torchvision.models.ResNet50_Weights[comp.id or "IMAGENET1K_V1"]
        return _frozen(torchvision.models.resnet50(weights=weights))
    if comp.source == "bootstrap":
        return _frozen(load_classifier(location(cfg, "resnet"))[0])
    from semtok.eval.features import ClassifierConfig

    return _frozen(
        _seeded(
            cfg, lambda: build_classifier(ClassifierConfig.from_dict(comp.arch, "pretrained.resnet.arch"))
        )
    )


def load_fid_extractor(cfg: Config) -> tuple[Any, dict[str, str], str]:
    """torch-fidelity feature extractor for FID/IS/PR, its feature names and a protocol string."""
    from semtok.eval.features import build_feature_extractor

    comp = component(cfg, "inception")
    if comp.source == "pretrained":
        weights = comp.subfolder  # optional local path of the Inception weights file
        return build_feature_extractor("inception", weights)
    if comp.source == "bootstrap":
        return build_feature_extractor("classifier", location(cfg, "inception"))
    return build_feature_extractor("inception", random_seed=cfg.seed)


def load_accuracy_classifier(cfg: Config) -> nn.Module:
    """The frozen classifier of the `class_acc` metric (an `ImageClassifier`: uint8 images → logits).

    It follows the FID extractor's entry: with `pretrained.inception.source: bootstrap` (offline) it
    is that entry's stand-in classifier — trained on training images only, and never the network
    Stage II optimises against (that is `resnet`); with real Inception weights it is torchvision's
    ResNet-50 with the ImageNet weights `evaluation.classifier` and their preprocessing at 224 px; with
    random Inception weights (`source: random`, offline runs at the paper's shapes) that ResNet-50 with
    random weights.
    """
    from semtok.eval.features import bootstrapped_classifier, torchvision_resnet50

    source = component(cfg, "inception").source
    if source == "bootstrap":
        return bootstrapped_classifier(location(cfg, "inception"))
    return torchvision_resnet50(cfg.evaluation.classifier, None if source == "pretrained" else cfg.seed)


REFERENCE_STANDIN = "standin"  # evaluation.fid_reference: a stand-in batch the workflow writes


def reference_source(cfg: Config) -> tuple[Path, str | None] | None:
    """Where `evaluation.fid_reference` (ADM's reference batch) lives: (local path, the URL it is
    downloaded from or None), or None when unset. A URL's copy is
    `<pretrained.cache_dir or ~/.cache/semtok>/ref_batches/<file name>`; the stand-in ("standin") is
    written by the `reference_standin` rule under the run's folder."""
    ref = cfg.evaluation.fid_reference
    if not ref:
        return None
    if ref == REFERENCE_STANDIN:
        return paths.reference_standin(cfg.out), None
    if urlparse(ref).scheme in ("http", "https"):
        cache = Path(cfg.pretrained.cache_dir or "~/.cache/semtok").expanduser() / "ref_batches"
        return cache / Path(urlparse(ref).path).name, ref
    return Path(ref).expanduser(), None


def reference_batch(cfg: Config) -> Path | None:
    """The local copy of `evaluation.fid_reference`, or None when unset; FileNotFoundError saying
    what to set when it is missing."""
    source = reference_source(cfg)
    if source is None:
        return None
    path, url = source
    if not path.is_file():
        fix = (
            f"run `snakemake prefetch_weights` on a node with internet access (it downloads {url}), or set "
            f"evaluation.fid_reference to a local copy of {path.name}"
            if url
            else "set evaluation.fid_reference to a local copy of ADM's reference batch, or to its URL"
        )
        raise FileNotFoundError(f"evaluation.fid_reference: {path} does not exist; {fix}")
    return path


def load_lpips_metric(cfg: Config) -> nn.Module:
    """LPIPS used as a reconstruction *metric* (AlexNet by convention; recorded in the CSV)."""
    import lpips
    import torch

    comp = component(cfg, "lpips_metric")
    net = comp.id or "alex"
    random_backbone = comp.source != "pretrained"
    # The offline stand-in's random backbone is drawn from a generator seeded by the run's seed, so every
    # job measures with the same network whatever it drew from the global generator before.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
    return _frozen(model)


def lpips_metric_protocol(cfg: Config) -> str:
    comp = component(cfg, "lpips_metric")
    return f"lpips-{comp.id or 'alex'}" + ("" if comp.source == "pretrained" else "-randombackbone")


# ---------------------------------------------------------------------------------------------
# Prefetch (login node, once)


def prefetch(cfg: Config) -> list[str]:
    """Download every 'pretrained' component into the cache; returns what was fetched."""
    configure_environment(cfg)
    fetched = []
    for name in ("vae", "sd3"):
        comp = component(cfg, name)
        if comp.source == "pretrained" and not Path(comp.id or "").exists():
            from huggingface_hub import snapshot_download

            pattern = [f"{comp.subfolder}/*"] if comp.subfolder else None
            snapshot_download(comp.id, revision=comp.revision, allow_patterns=pattern)
            fetched.append(f"{name}: {comp.id}/{comp.subfolder or ''}")
    comp = component(cfg, "siglip")
    if comp.source == "pretrained" and not Path(comp.id or "").exists():
        from huggingface_hub import snapshot_download

        snapshot_download(comp.id, revision=comp.revision)
        fetched.append(f"siglip: {comp.id}")
    for name, loader in (("lpips", load_lpips), ("resnet", load_resnet), ("lpips_metric", load_lpips_metric)):
        if component(cfg, name).source == "pretrained":
            loader(cfg)  # torchvision/lpips download into TORCH_HOME on first construction
            fetched.append(name)
    if component(cfg, "inception").source == "pretrained":
        load_fid_extractor(cfg)
        load_accuracy_classifier(cfg)
        fetched += ["inception", f"class_acc classifier: ResNet-50 {cfg.evaluation.classifier}"]
    source = reference_source(cfg)
    if source is not None and source[1] is not None:
        path, url = source
        if not path.is_file():
            import torch

            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path))  # to a temporary file, then renamed
        fetched.append(f"reference batch: {path}")
    return fetched


def siglip_hidden_size(cfg: Config) -> int:
    """Feature width of the SigLIP tower (C_sig), read from its config only."""
    comp = component(cfg, "siglip")
    if comp.source == "random":
        return tiny_siglip_config(comp.arch).hidden_size
    from transformers import SiglipVisionConfig

    kw = {"revision": comp.revision} if comp.revision else {}
    return SiglipVisionConfig.from_pretrained(location(cfg, "siglip"), **kw).hidden_size


def public_config(config: Any) -> dict[str, Any]:
    """A diffusers/transformers config as plain kwargs (private `_...` entries dropped)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}
