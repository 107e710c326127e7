"""Image-quality metrics (SPEC §5).

Generation: FID (Fréchet distance between Gaussian fits of features), Inception Score (samples
shuffled before the 10 splits) and improved Precision/Recall with k-NN manifolds (Kynkäänniemi et al.
2019, k = 3), each computed by torch-fidelity's own metric function on the features that
`semtok.eval.features` extracts — the "torch-fidelity protocol" of the metric CSVs. Reconstruction:
PSNR and SSIM on uint8 RGB images (ours, equal to scikit-image's) and LPIPS. Nothing here knows
about files other than the ADM reference-statistics `.npz` convention (keys `mu`, `sigma`), so the
pipeline's numbers can be compared with published ones computed against
`VIRTUAL_imagenet256_labeled.npz`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from semtok.utils.io import save_npz

ArrayLike = np.ndarray | torch.Tensor
ISC_SEED = 2020  # torch-fidelity's default `rng_seed` for the IS shuffle
PRC_BATCH_SIZE = 10_000  # torch-fidelity's default `prc_batch_size`


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set: mu (D,), sigma (D, D), float64; n samples (None when the
    file it came from does not say, as with ADM reference batches)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None


def _float64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def stats_from_features(feats: ArrayLike) -> FeatureStats:
    """feats: (N, D) → mean and unbiased covariance (N − 1 denominator, as np.cov and ADM)."""
    feats = _float64(feats)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, D), got {feats.shape}")
    return FeatureStats(mu=feats.mean(axis=0), sigma=np.cov(feats, rowvar=False), n=feats.shape[0])


def save_stats(path: str | Path, stats: FeatureStats) -> None:
    """Write an ADM-style `.npz` (keys `mu`, `sigma`; plus `n` when known)."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma}
    if stats.n is not None:
        arrays["n"] = np.asarray(stats.n)
    save_npz(Path(path), **arrays)


def load_stats(path: str | Path) -> FeatureStats:
    """Read `mu`/`sigma` from an `.npz` (ours or ADM's reference batch, whose `arr_0` images are
    not loaded). Raises ValueError naming the file when the keys are missing."""
    with np.load(path) as data:
        missing = [key for key in ("mu", "sigma") if key not in data.files]
        if missing:
            raise ValueError(
                f"{path}: not a feature-statistics file, missing key(s) {missing} (found {data.files}); "
                "expected an ADM-style .npz with 'mu' (D,) and 'sigma' (D, D)"
            )
        n = int(data["n"]) if "n" in data.files else None
        return FeatureStats(mu=data["mu"].astype(np.float64), sigma=data["sigma"].astype(np.float64), n=n)


def frechet_distance(stats1: FeatureStats, stats2: FeatureStats) -> float:
    """FID = ||mu1 − mu2||² + Tr(S1 + S2 − 2 (S1 S2)^½) (Heusel et al. 2017), computed by
    torch-fidelity's `fid_statistics_to_metric` (trace of the square root from the eigenvalues of
    S1 S2) on float64 statistics."""
    mu1, mu2 = np.atleast_1d(stats1.mu), np.atleast_1d(stats2.mu)
    sigma1, sigma2 = np.atleast_2d(stats1.sigma), np.atleast_2d(stats2.sigma)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different dimension: {mu1.shape} vs {mu2.shape}")
    stat_1 = {"mu": mu1.astype(np.float64), "sigma": sigma1.astype(np.float64)}
    stat_2 = {"mu": mu2.astype(np.float64), "sigma": sigma2.astype(np.float64)}
    return float(fid_statistics_to_metric(stat_1, stat_2, verbose=False)[KEY_METRIC_FID])


def inception_score(logits: ArrayLike, splits: int = 10, seed: int = ISC_SEED) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) over `splits` chunks (Salimans et al. 2016), computed by
    torch-fidelity's `isc_features_to_metric`.

    logits: (N, C), in any order: the samples are shuffled (a fixed permutation drawn with `seed`,
    torch-fidelity's default) before they are cut into chunks, so that a file written class by class
    does not give each chunk a handful of classes. Returns (mean, std) over the chunks.
    """
    feats = torch.as_tensor(_float64(logits))
    if feats.ndim != 2 or len(feats) < splits:
        raise ValueError(f"need logits of shape (N >= splits={splits}, C), got {tuple(feats.shape)}")
    out = isc_features_to_metric(feats, splits=splits, shuffle=True, rng_seed=seed)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


def precision_recall(
    real_feats: ArrayLike,
    fake_feats: ArrayLike,
    k: int = 3,
    batch_size: int = PRC_BATCH_SIZE,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), computed by torch-fidelity's
    `prc_features_to_metric`.

    real_feats: (N, D), fake_feats: (M, D). Each set's manifold is the union of balls around its
    samples with radius = distance to the k-th nearest neighbour in the same set. Precision is the
    fraction of fakes inside the real manifold, recall the fraction of reals inside the fake one.
    Distances are computed `batch_size` rows at a time (batch_size × max(N, M) float32 in memory), on
    `device` (default: where the inputs are, CPU for numpy).
    """
    real = torch.as_tensor(real_feats, device=device).float()
    fake = torch.as_tensor(fake_feats, device=device).float()
    out = prc_features_to_metric(
        fake, real, prc_neighborhood=k, prc_batch_size=batch_size, save_cpu_ram=True, verbose=False
    )
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def _paired_batches(
    a: ArrayLike, b: ArrayLike, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """a, b: (N, H, W, 3) uint8 → batches of (B, 3, H, W) float64 in [0, 255], converted lazily."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    for images in (a, b):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {tuple(images.shape)}"
            )
    if a.shape != b.shape:
        raise ValueError(f"image sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    for x, y in zip(a.split(batch_size), b.split(batch_size), strict=True):
        yield x.permute(0, 3, 1, 2).double(), y.permute(0, 3, 1, 2).double()


def psnr_uint8(a: ArrayLike, b: ArrayLike, batch_size: int = 256) -> float:
    """Mean over images of PSNR = 10 log10(255² / MSE), MSE over all pixels and channels.

    a, b: (N, H, W, 3) uint8. Identical images would give +inf; their MSE is instead floored at the
    smallest non-zero MSE two uint8 images of that size can have, 1 / (H·W·3) (one channel of one
    pixel off by one level), so one perfect reconstruction keeps the mean finite. Any other pair
    matches skimage's `peak_signal_noise_ratio(data_range=255)`.
    """
    per_image = []
    for x, y in _paired_batches(a, b, batch_size):
        mse = (x - y).square().mean(dim=(1, 2, 3)).clamp_min(1.0 / x[0].numel())
        per_image.append(10.0 * torch.log10(255.0**2 / mse))
    return torch.cat(per_image).mean().item()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised separable Gaussian window: (size, size) float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_uint8(a: ArrayLike, b: ArrayLike, batch_size: int = 32) -> float:
    """Mean SSIM (Wang et al. 2004) over images.

    a, b: (N, H, W, 3) uint8 RGB, H, W >= 11. Convention: Gaussian window 11×11 with σ = 1.5,
    K1 = 0.01, K2 = 0.03, data range 255, population (not sample) covariances; the SSIM map is
    computed per channel on the valid region (no padding, i.e. a 5-pixel border is excluded),
    averaged over the map, then over the 3 channels, then over images. This equals skimage's
    `structural_similarity(channel_axis=-1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)`.
    """
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = _gaussian_window()[None, None]
    per_image = []
    for x, y in _paired_batches(a, b, batch_size):
        n, c, h, w = x.shape
        stacked = torch.cat([x, y, x * x, y * y, x * y]).reshape(-1, 1, h, w)
        ux, uy, uxx, uyy, uxy = F.conv2d(stacked, window).reshape(5, n, c, h - 10, w - 10)
        vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
        ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        per_image.append(ssim_map.mean(dim=(1, 2, 3)))
    return torch.cat(per_image).mean().item()


@torch.no_grad()
def lpips_distance(model: torch.nn.Module, a: ArrayLike, b: ArrayLike, batch_size: int = 32) -> float:
    """Mean LPIPS distance between paired images.

    model: an `lpips.LPIPS` network (its device is used); a, b: (N, H, W, 3) uint8, mapped to
    [-1, 1] as LPIPS expects.
    """
    device = next(model.parameters()).device
    distances = []
    for x, y in _paired_batches(a, b, batch_size):
        x = x.to(device, torch.float32) / 127.5 - 1.0
        y = y.to(device, torch.float32) / 127.5 - 1.0
        distances.append(model(x, y).flatten())
    return torch.cat(distances).mean().item()
