"""Where ADM's reference batch comes from (evaluation.fid_reference) and how its file is checked."""

from pathlib import Path

import numpy as np
import pytest
import torch

from semtok import registry
from semtok.config import load
from semtok.eval.reference import read_reference_batch

ROOT = Path(__file__).resolve().parents[2]
URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/VIRTUAL_imagenet256_labeled.npz"


def _write_batch(path: Path) -> Path:
    np.savez(path, arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=np.zeros(4), sigma=np.eye(4))
    return path


def test_the_paper_config_uses_adms_batch_from_its_url(tmp_path):
    cfg = load(ROOT / "config/paper.yaml", [f"pretrained.cache_dir={tmp_path}"])
    assert cfg.evaluation.fid_reference == URL
    path, url = registry.reference_source(cfg)
    assert path == tmp_path / "ref_batches" / "VIRTUAL_imagenet256_labeled.npz" and url == URL
    with pytest.raises(FileNotFoundError, match=r"prefetch_weights.*or set evaluation.fid_reference"):
        registry.reference_batch(cfg)
    path.parent.mkdir(parents=True)
    _write_batch(path)
    assert registry.reference_batch(cfg) == path


def test_prefetch_downloads_the_batch_once(tmp_path, monkeypatch):
    cfg = load(
        ROOT / "config/config.yaml", [f"pretrained.cache_dir={tmp_path}", f"evaluation.fid_reference={URL}"]
    )
    calls = []
    monkeypatch.setattr(
        torch.hub, "download_url_to_file", lambda url, dst: calls.append(url) or _write_batch(Path(dst))
    )
    fetched = registry.prefetch(cfg)
    registry.prefetch(cfg)
    assert calls == [URL]
    assert fetched == [f"reference batch: {tmp_path / 'ref_batches' / 'VIRTUAL_imagenet256_labeled.npz'}"]


def test_a_local_copy_is_used_as_it_is(tmp_path):
    batch = _write_batch(tmp_path / "ref.npz")
    cfg = load(ROOT / "config/config.yaml", [f"evaluation.fid_reference={batch}"])
    assert registry.reference_batch(cfg) == batch
    missing = load(ROOT / "config/config.yaml", [f"evaluation.fid_reference={tmp_path / 'nope.npz'}"])
    with pytest.raises(FileNotFoundError, match="nope.npz does not exist; set evaluation.fid_reference"):
        registry.reference_batch(missing)
    assert registry.reference_batch(load(ROOT / "config/config.yaml")) is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"mu": np.zeros(4), "sigma": np.eye(4)}, r"missing key\(s\) \['arr_0'\]"),
        ({"arr_0": np.zeros((2, 8, 8, 3)), "mu": np.zeros(4), "sigma": np.eye(4)}, "arr_0 must be uint8"),
        ({"arr_0": np.zeros((2, 8, 8, 3), np.uint8), "mu": np.zeros(4), "sigma": np.eye(3)}, "are not"),
    ],
)
def test_a_malformed_batch_is_refused_naming_the_file(arrays, message, tmp_path):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=f"bad.npz.*{message}"):
        read_reference_batch(tmp_path / "bad.npz")
