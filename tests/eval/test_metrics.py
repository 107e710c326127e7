import lpips
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from semtok.eval.metrics import (
    FeatureStats,
    frechet_distance,
    inception_score,
    load_stats,
    lpips_distance,
    precision_recall,
    psnr_uint8,
    save_stats,
    ssim_uint8,
    stats_from_features,
)


@pytest.fixture
def feats() -> np.ndarray:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(16, 16))
    return rng.normal(size=(800, 16)) @ mixing


def test_fid_of_a_set_with_itself_is_zero(feats):
    stats = stats_from_features(feats)
    assert abs(frechet_distance(stats, stats)) < 1e-6 * np.trace(stats.sigma)


def test_fid_grows_with_mean_shift(feats):
    stats = stats_from_features(feats)
    fids = [frechet_distance(stats, stats_from_features(feats + shift)) for shift in (0.5, 1.0, 2.0)]
    assert 0 < fids[0] < fids[1] < fids[2]
    # a pure shift leaves the covariances equal, so FID is exactly ||Δmu||² = 16·shift².
    np.testing.assert_allclose(fids, [16 * 0.25, 16 * 1.0, 16 * 4.0], rtol=1e-6)


def test_fid_matches_closed_form_for_diagonal_gaussians():
    d = 5
    a = FeatureStats(mu=np.zeros(d), sigma=np.diag(np.arange(1.0, d + 1)), n=None)
    b = FeatureStats(mu=np.ones(d), sigma=np.diag(np.arange(1.0, d + 1) * 4), n=None)
    # Tr(S1 + S2 − 2(S1 S2)^½) = Σ (s + 4s − 2·2s) = Σ s
    assert frechet_distance(a, b) == pytest.approx(d + np.arange(1.0, d + 1).sum(), rel=1e-10)


def test_fid_from_saved_statistics_equals_fid_from_features(feats, tmp_path):
    real, fake = stats_from_features(feats), stats_from_features(feats[::2] * 1.1 + 0.3)
    save_stats(tmp_path / "ref.npz", real)
    loaded = load_stats(tmp_path / "ref.npz")
    assert loaded.n == real.n == len(feats)
    assert frechet_distance(loaded, fake) == frechet_distance(real, fake)


def test_load_stats_accepts_adm_layout_without_n(feats, tmp_path):
    stats = stats_from_features(feats)
    path = tmp_path / "VIRTUAL_ref.npz"
    np.savez(path, arr_0=np.zeros((2, 4, 4, 3), np.uint8), mu=stats.mu.astype(np.float32), sigma=stats.sigma)
    loaded = load_stats(path)
    assert loaded.n is None
    np.testing.assert_allclose(loaded.mu, stats.mu, rtol=1e-6)


def test_load_stats_without_mu_sigma_names_the_file(tmp_path):
    path = tmp_path / "images_only.npz"
    np.savez(path, arr_0=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="images_only.npz"):
        load_stats(path)


def _image_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    random = rng.integers(0, 256, size=(3, 32, 40, 3), dtype=np.uint8)
    noisy = np.clip(random.astype(int) + rng.integers(-30, 31, size=random.shape), 0, 255).astype(np.uint8)
    ramp = np.linspace(0, 255, 40)[None, None, :, None] * np.linspace(0.2, 1, 32)[None, :, None, None]
    smooth = np.broadcast_to(ramp, (3, 32, 40, 3)) * np.array([1.0, 0.7, 0.4])
    smooth = smooth.astype(np.uint8)
    blurred = ((smooth.astype(int) + np.roll(smooth, 1, axis=2)) // 2 + 3).clip(0, 255).astype(np.uint8)
    return {"random": (random, noisy), "smooth": (smooth, blurred), "random_vs_smooth": (random, smooth)}


@pytest.mark.parametrize("name", ["random", "smooth", "random_vs_smooth"])
def test_psnr_and_ssim_match_skimage(name):
    a, b = _image_pairs()[name]
    psnr_ref = np.mean([peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a, b, strict=True)])
    ssim_ref = np.mean(
        [
            structural_similarity(
                x,
                y,
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
            )
            for x, y in zip(a, b, strict=True)
        ]
    )
    assert psnr_uint8(a, b) == pytest.approx(psnr_ref, rel=1e-10)
    assert ssim_uint8(a, b, batch_size=2) == pytest.approx(ssim_ref, abs=1e-9)


def test_identical_images_have_finite_capped_psnr_and_unit_ssim():
    a, b = _image_pairs()["random"]
    h, w = a.shape[1:3]
    cap = 10 * np.log10(255.0**2 * h * w * 3)
    assert psnr_uint8(a, a) == pytest.approx(cap)
    one_off = a.copy()
    one_off[:, 0, 0, 0] ^= 1  # every image differs by exactly one level in one channel of one pixel
    assert psnr_uint8(a, one_off) == pytest.approx(cap)
    mixed = np.concatenate([a[:1], b[1:]])
    expected = np.mean(
        [cap] + [peak_signal_noise_ratio(x, y, data_range=255) for x, y in zip(a[1:], b[1:], strict=True)]
    )
    assert psnr_uint8(a, mixed) == pytest.approx(expected)
    assert ssim_uint8(a, a) == pytest.approx(1.0)


def test_reconstruction_metrics_reject_float_images():
    a, _ = _image_pairs()["random"]
    with pytest.raises(ValueError, match="uint8"):
        psnr_uint8(a.astype(np.float32), a)


def test_inception_score_bounds():
    c = 10
    same = np.tile(np.random.default_rng(2).normal(size=(1, c)), (200, 1))
    mean, std = inception_score(same, splits=4)
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)
    one_hot = 50.0 * np.eye(c)[np.tile(np.arange(c), 20)]
    mean, std = inception_score(one_hot, splits=1)
    assert mean == pytest.approx(c, rel=1e-6) and std == 0.0
    mean, _ = inception_score(one_hot, splits=4)
    assert 0.9 * c < mean <= c + 1e-9  # shuffled chunks of 50 hold nearly every class


def test_inception_score_is_between_one_and_classes_for_random_logits():
    logits = torch.randn(300, 7, generator=torch.Generator().manual_seed(3)) * 3
    mean, std = inception_score(logits, splits=3)
    assert 1.0 < mean < 7.0 and std > 0


def test_inception_score_does_not_depend_on_sample_order():
    """`semtok sample` writes class by class: 50 classes × 20 confident samples in class order. Split
    in file order, each of 10 chunks would hold 5 classes and IS could not exceed 5."""
    rng = np.random.default_rng(6)
    classes, per_class = 50, 20
    labels = np.repeat(np.arange(classes), per_class)
    logits = 8.0 * np.eye(classes)[labels] + rng.normal(size=(len(labels), classes))
    ordered, _ = inception_score(logits)
    shuffled, _ = inception_score(logits[rng.permutation(len(labels))])
    assert ordered > 2 * classes / 10
    assert ordered == pytest.approx(shuffled, rel=0.05)


def test_generation_metrics_are_torch_fidelitys():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(120, 6)), rng.normal(size=(90, 6)) * 1.2 + 0.3
    logits = rng.normal(size=(90, 5)) * 3
    fid = fid_statistics_to_metric(
        fid_features_to_statistics(torch.as_tensor(fake)),
        fid_features_to_statistics(torch.as_tensor(real)),
        verbose=False,
    )["frechet_inception_distance"]
    assert frechet_distance(stats_from_features(fake), stats_from_features(real)) == pytest.approx(fid)
    isc = isc_features_to_metric(torch.as_tensor(logits), splits=3, shuffle=True, rng_seed=2020)
    assert inception_score(logits, splits=3) == (isc["inception_score_mean"], isc["inception_score_std"])
    prc = prc_features_to_metric(
        torch.as_tensor(fake).float(), torch.as_tensor(real).float(), prc_neighborhood=3, verbose=False
    )
    assert precision_recall(real, fake, k=3) == (prc["precision"], prc["recall"])


def test_precision_recall_identical_and_shifted():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(300, 8)).astype(np.float32)
    assert precision_recall(real, real.copy(), k=3, batch_size=64) == (1.0, 1.0)
    far = real[:100] + 100.0
    precision, recall = precision_recall(real, far, k=3, batch_size=64)
    assert precision == 0.0 and recall == 0.0
    # half the fakes on the real manifold, half far away: precision ≈ 0.5, recall stays high
    half = np.concatenate([rng.normal(size=(150, 8)), rng.normal(size=(150, 8)) + 100.0]).astype(np.float32)
    precision, recall = precision_recall(real, half, k=3, batch_size=64)
    assert 0.4 < precision <= 0.5 and recall > 0.8


def test_precision_recall_batching_does_not_change_result():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) * 1.3 + 0.2
    assert precision_recall(real, fake, batch_size=17) == precision_recall(real, fake, batch_size=1000)


def test_lpips_distance_zero_for_identical_and_symmetric():
    torch.manual_seed(0)
    model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False).eval()
    a, b = _image_pairs()["random"]
    assert lpips_distance(model, a, a, batch_size=2) == pytest.approx(0.0, abs=1e-7)
    d_ab = lpips_distance(model, a, b, batch_size=2)
    assert d_ab != 0.0
    assert d_ab == pytest.approx(lpips_distance(model, b, a, batch_size=3), rel=1e-5)
    x = torch.as_tensor(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.as_tensor(b).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        assert d_ab == pytest.approx(model(x, y).mean().item(), rel=1e-5)


def test_the_offline_lpips_metric_is_the_same_network_in_every_job(cfg):
    """The stand-in LPIPS (random AlexNet backbone) does not depend on what a job drew before."""
    from semtok import registry

    torch.manual_seed(1)
    first = registry.load_lpips_metric(cfg).state_dict()
    torch.manual_seed(2)
    torch.rand(7)
    second = registry.load_lpips_metric(cfg).state_dict()
    assert registry.lpips_metric_protocol(cfg).endswith("-randombackbone")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    after = torch.rand(3)
    torch.manual_seed(2)
    torch.rand(7)
    assert torch.equal(after, torch.rand(3))  # the global generator is left where it was
