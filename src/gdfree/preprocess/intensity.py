"""N4 bias-field correction (SimpleITK) and intensity normalisation (z-score in the brain, or the mode of
normal-appearing white matter).

N4 runs on a shrunk copy (``shrink``; 4 by default, as most pipelines do) and the log bias field is then
evaluated on the full grid, so the corrected image keeps its resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gdfree.arrays import histogram_mode, mask_stats, nawm_mask, zscore

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["NORMALISATIONS", "n4", "normalise_intensity"]

NORMALISATIONS = ("none", "zscore", "nawm")


def n4(
    image: sitk.Image,
    mask: sitk.Image | None = None,
    *,
    shrink: int = 4,
    iterations: Sequence[int] = (50, 50, 30),
    fitting_levels: int | None = None,
) -> tuple[sitk.Image, sitk.Image]:
    """Bias-correct ``image``; returns (corrected float32 image, bias field on the image grid).

    Args:
        mask: voxels that drive the fit; Otsu's foreground of the image when None.
        shrink: shrink factor of the fitting grid (1 = full resolution, slower).
        iterations: per fitting level (their count sets the levels unless ``fitting_levels``).
    """
    import SimpleITK as sitk

    img = sitk.Cast(image, sitk.sitkFloat32)
    # N4 takes logs: work on a strictly positive copy, undo the offset after dividing by the field.
    arr_min = float(sitk.GetArrayViewFromImage(img).min())
    offset = 1.0 - arr_min if arr_min <= 0 else 0.0
    positive = img + offset
    if mask is None:
        mask = sitk.OtsuThreshold(img, 0, 1, 200)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    small = sitk.Shrink(positive, [shrink] * 3) if shrink > 1 else positive
    small_mask = sitk.Shrink(mask, [shrink] * 3) if shrink > 1 else mask
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    if fitting_levels is not None:
        corrector.SetNumberOfFittingLevels(fitting_levels)  # type: ignore[attr-defined]  # absent from its stubs
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(positive)
    field = sitk.Exp(log_field)
    corrected = sitk.Divide(positive, field) - offset
    return sitk.Cast(corrected, sitk.sitkFloat32), sitk.Cast(field, sitk.sitkFloat32)


def normalise_intensity(
    image: np.ndarray, brain: np.ndarray, method: str = "zscore", lesion: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Normalise a 3-D image; returns (float32 image, the parameters used).

    ``zscore``: (x - mean) / std over the brain. ``nawm``: x / mode of normal-appearing white matter (brain
    minus dilated lesions and the brain edge), so NAWM is 1: on T1w, T2w and FLAIR white matter is the
    largest tissue and its histogram peak is the mode. ``none``: unchanged. Outside the brain the output is 0.

    Raises:
        ValueError: unknown method or empty brain mask.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"normalisation: expected one of {', '.join(NORMALISATIONS)}, got {method!r}")
    if not brain.any():
        raise ValueError("normalise_intensity: the brain mask is empty")
    data = image.astype(np.float32)
    if method == "none":
        return data, {}
    if method == "zscore":
        mean, std = mask_stats(data, brain)
        return zscore(data, brain, stats=(mean, std)), {"mean": mean, "std": std}
    region = nawm_mask(brain, lesion)
    mode = histogram_mode(data[region] if region.sum() > 100 else data[brain])
    if mode <= 0:
        raise ValueError(f"normalise_intensity: the white-matter mode is {mode:.3g}; expected a positive intensity")
    return np.where(brain, data / mode, 0.0).astype(np.float32), {"nawm_mode": mode}
