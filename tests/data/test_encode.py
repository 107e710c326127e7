import io

import numpy as np
import pytest
import torch
import yaml

from semtok import paths, registry
from semtok.cli import main as cli
from semtok.config import to_dict
from semtok.data import encode
from semtok.data.images import decode_rgb, to_model_range
from semtok.data.shards import read_shard
from semtok.models import vae


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


@pytest.mark.parametrize("split, index", [("train", 0), ("train", 1), ("val", 0)])
def test_feature_shards_are_aligned_with_image_shards(built_cfg, split, index):
    images = list(read_shard(paths.image_shard(built_cfg.out, split, index)))
    latents = list(read_shard(paths.feature_shard(built_cfg.out, "latents", split, index)))
    siglip = list(read_shard(paths.feature_shard(built_cfg.out, "siglip", split, index)))
    assert len(images) > 0
    for img, lat, sig in zip(images, latents, siglip, strict=True):
        assert img["__key__"] == lat["__key__"] == sig["__key__"]
        assert img["cls"] == lat["cls"] == sig["cls"]
        assert set(lat) == {"__key__", "__url__", "cls", "latent.npy", "latent_flip.npy"}
        assert set(sig) == {"__key__", "__url__", "cls", "siglip.npy"}
        for arr, shape in ((_npy(lat["latent.npy"]), (4, 8, 8)), (_npy(lat["latent_flip.npy"]), (4, 8, 8))):
            assert arr.dtype == np.float16 and arr.shape == shape
        feats = _npy(sig["siglip.npy"])
        assert feats.dtype == np.float16 and feats.shape == (16, 32)


def test_stored_values_are_the_raw_mean_of_image_and_flip(built_cfg, tmp_path):
    source = paths.image_shard(built_cfg.out, "val", 0)
    images = to_model_range([decode_rgb(s["jpg"]) for s in read_shard(source)])
    for kind in encode.KINDS:
        torch.manual_seed(0)
        encode.encode_shard(built_cfg, kind, source, tmp_path / f"{kind}.tar")
        torch.manual_seed(0)
        model = encode.load_encoder(built_cfg, kind)
        stored = list(read_shard(tmp_path / f"{kind}.tar"))
        if kind == "latents":
            mean = vae.encode_mean(model, images)
            mean_flip = vae.encode_mean(model, images.flip(-1))
            got = torch.stack([torch.from_numpy(_npy(s["latent.npy"])).float() for s in stored])
            got_flip = torch.stack([torch.from_numpy(_npy(s["latent_flip.npy"])).float() for s in stored])
            torch.testing.assert_close(got, mean, atol=2e-3, rtol=2e-3)
            torch.testing.assert_close(got_flip, mean_flip, atol=2e-3, rtol=2e-3)
            assert not torch.allclose(got, got_flip, atol=1e-2)
        else:
            features = encode.encode_images_siglip(model, images)
            got = torch.stack([torch.from_numpy(_npy(s["siglip.npy"])).float() for s in stored])
            torch.testing.assert_close(got, features, atol=3e-3, rtol=3e-3)


def test_failed_encoding_leaves_no_output(built_cfg, tmp_path, monkeypatch):
    calls = []

    def failing(kind, model, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return [{"siglip.npy": b"x"}] * len(images)

    monkeypatch.setattr(encode, "feature_payloads", failing)
    output = tmp_path / "out.tar"
    with pytest.raises(RuntimeError, match="boom"):
        encode.encode_shard(built_cfg, "siglip", paths.image_shard(built_cfg.out, "train", 0), output)
    assert calls == [8, 4] and list(tmp_path.iterdir()) == []


def test_online_siglip_matches_model_on_preprocessed_pixels(built_cfg):
    model = registry.load_siglip(built_cfg)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    expected = model(pixel_values=images).last_hidden_state  # image size == SigLIP size: only [-1, 1] scaling
    torch.testing.assert_close(encode.encode_images_siglip(model, images), expected)


def test_cli_encodes_a_shard(built_cfg, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(to_dict(built_cfg)))
    source, output = paths.image_shard(built_cfg.out, "val", 0), tmp_path / "val-00000.tar"
    args = [
        "--kind",
        "latents",
        "--split",
        "val",
        "--shard",
        "00000",
        "--input",
        str(source),
        "--output",
        str(output),
    ]
    assert cli.main(["encode", "--config", str(config), *args]) == 0
    assert [s["__key__"] for s in read_shard(output)] == [s["__key__"] for s in read_shard(source)]
