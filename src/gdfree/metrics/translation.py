"""Image translation: how close a synthetic post-Gd T1w is to the acquired one, inside a mask.

Metrics are computed on the intensities as given; normalise both images the same way first (the
framings are compared on identical preprocessing). ``data_range`` defaults to the reference's
max - min inside the mask.
"""

from __future__ import annotations

import math

import numpy as np

from gdfree.arrays import as_mask, bounding_box, same_shape

__all__ = ["translation_metrics"]


def translation_metrics(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None
) -> dict[str, float]:
    """MAE, PSNR (dB) and SSIM of ``pred`` against ``ref`` over the voxels of ``mask`` (all if None).

    SSIM is scikit-image's (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03, population
    covariance) computed on the mask's bounding box, its map averaged over the mask voxels.

    Empty mask -> NaN for all three. Identical images -> MAE 0, PSNR inf, SSIM 1.
    """
    from skimage.metrics import structural_similarity

    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if pred.ndim != 3:
        raise ValueError(f"pred: expected a 3-D image, got shape {pred.shape}")
    same_shape(("pred", pred), ("ref", ref))
    region = np.ones(ref.shape, bool) if mask is None else as_mask(mask, "mask")
    same_shape(("ref", ref), ("mask", region))
    if not np.isfinite(pred[region]).all() or not np.isfinite(ref[region]).all():
        raise ValueError("pred/ref: NaN or infinite intensities inside the mask")
    box = bounding_box(region, margin=5)
    if box is None:
        return {"mae": math.nan, "psnr_db": math.nan, "ssim": math.nan}
    values_ref, values_pred = ref[region], pred[region]
    span = float(values_ref.max() - values_ref.min()) if data_range is None else float(data_range)
    if not span > 0:
        raise ValueError(f"data_range: expected > 0, got {span} (is the reference constant in the mask?)")
    mse = float(np.mean((values_pred - values_ref) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(span**2 / mse)
    # The smallest side must hold the 7-voxel window scikit-image needs; tiny test volumes pad with edges.
    crop_ref, crop_pred, crop_mask = ref[box], pred[box], region[box]
    pad = [(0, max(0, 7 - s)) for s in crop_ref.shape]
    crop_ref, crop_pred = np.pad(crop_ref, pad, mode="edge"), np.pad(crop_pred, pad, mode="edge")
    crop_mask = np.pad(crop_mask, pad)
    _, ssim_map = structural_similarity(
        crop_ref, crop_pred, data_range=span, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        full=True,
    )  # fmt: skip
    return {
        "mae": float(np.mean(np.abs(values_pred - values_ref))),
        "psnr_db": psnr,
        "ssim": float(ssim_map[crop_mask].mean()),
    }
