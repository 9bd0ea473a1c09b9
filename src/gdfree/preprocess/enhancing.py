"""Enhancing-lesion labels derived from registered pre- and post-Gd T1w, with a QC picture.

Both images are divided by their normal-appearing white-matter (NAWM) mode, the pre-contrast image is
subtracted from the post-contrast one, and a voxel enhances when the subtraction exceeds its NAWM median by
``k`` robust spreads (1.4826 x MAD over NAWM) and a fraction of its component's peak. Candidates are kept
inside the (dilated) lesion mask, or
inside the brain when no lesion mask exists or ``region: brain`` is asked for (then vessels, dura and
choroid plexus enhance too); components of ``min_volume_mm3`` or less are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.evaluate.lesions import LESION_CONNECTIVITY, label_lesions
from gdfree.io.images import save_figure
from gdfree.preprocess.intensity import nawm_mask, normalise_intensity

__all__ = ["EnhancingConfig", "derive_enhancing", "write_qc_png"]


@dataclass(frozen=True)
class EnhancingConfig:
    """Knobs of :func:`derive_enhancing` (saved with every derived mask).

    Attributes:
        k: threshold in robust spreads of the subtraction over NAWM.
        region: ``lesion`` (inside the lesion mask dilated by ``dilate_mm``) or ``brain``.
        dilate_mm: dilation of the lesion mask (enhancing rims can lie just outside a FLAIR lesion mask).
        min_volume_mm3: components of this volume or less are dropped.
        connectivity: 6, 18 or 26 for the components (default: the lesion rule of
            :data:`gdfree.evaluate.lesions.LESION_CONNECTIVITY`, so ``prepare`` and ``evaluate`` count alike).
        peak_fraction: within each component keep the voxels at or above this fraction of its peak
            subtraction (its 90th percentile; 0 keeps all): a voxel at least half filled by enhancing tissue
            gives at least half the signal of a full one, so 0.5 removes the partial-volume rim that a noise
            threshold keeps.
    """

    k: float = 3.0
    region: str = "lesion"
    dilate_mm: float = 1.0
    min_volume_mm3: float = 10.0
    connectivity: int = LESION_CONNECTIVITY
    peak_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.region not in ("lesion", "brain"):
            raise ValueError(f"region: expected lesion or brain, got {self.region!r}")
        if self.k <= 0 or self.dilate_mm < 0 or self.min_volume_mm3 < 0:
            raise ValueError("k must be > 0, dilate_mm and min_volume_mm3 >= 0")


def derive_enhancing(
    pre: np.ndarray,
    post: np.ndarray,
    brain: np.ndarray,
    spacing_mm: Sequence[float],
    lesion: np.ndarray | None = None,
    config: EnhancingConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Enhancing mask from pre/post-Gd T1w on one grid.

    Returns:
        (bool mask, float32 subtraction in NAWM-mode units, info: threshold, spread, region, component count
        and volumes, config).

    Raises:
        ValueError: shapes differ or the brain mask is empty.
    """
    cfg = config or EnhancingConfig()
    if not (pre.shape == post.shape == brain.shape) or (lesion is not None and lesion.shape != pre.shape):
        raise ValueError(f"derive_enhancing: images and masks must share a grid, got {pre.shape}, {post.shape}, "
                         f"{brain.shape}{'' if lesion is None else ', ' + str(lesion.shape)}")  # fmt: skip
    brain = brain.astype(bool)
    pre_n, pre_info = normalise_intensity(pre, brain, "nawm", lesion)
    post_n, post_info = normalise_intensity(post, brain, "nawm", lesion)
    diff = np.where(brain, post_n - pre_n, 0.0).astype(np.float32)
    nawm = nawm_mask(brain, lesion)
    values = diff[nawm] if nawm.sum() > 100 else diff[brain]
    centre = float(np.median(values))
    spread = float(1.4826 * np.median(np.abs(values - centre))) or float(values.std()) or 1e-6
    threshold = centre + cfg.k * spread
    region_name = cfg.region if (cfg.region == "brain" or (lesion is not None and lesion.any())) else "brain"
    if region_name == "lesion":
        assert lesion is not None
        distance = ndimage.distance_transform_edt(~lesion.astype(bool), sampling=spacing_mm)
        region = (distance <= cfg.dilate_mm) & brain
    else:
        region = brain
    labels, n = label_lesions((diff > threshold) & region, spacing_mm, cfg.connectivity, cfg.min_volume_mm3)
    if cfg.peak_fraction > 0 and n:
        # the 90th percentile, not the maximum: a vessel crossing the lesion must not raise the cut
        peaks = ndimage.labeled_comprehension(diff, labels, np.arange(1, n + 1), lambda v: np.percentile(v, 90),
                                              np.float64, 0.0)  # fmt: skip
        cut = np.concatenate([[np.inf], np.maximum(np.asarray(peaks) * cfg.peak_fraction, threshold)])
        labels, n = label_lesions((labels > 0) & (diff >= cut[labels]), spacing_mm, cfg.connectivity,
                                  cfg.min_volume_mm3)  # fmt: skip
    mask = labels > 0
    voxel_mm3 = float(np.prod(spacing_mm))
    volumes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_mm3
    info = {
        "threshold": threshold, "nawm_median": centre, "nawm_spread": spread, "region": region_name,
        "n_components": int(n), "volumes_mm3": [round(float(v), 2) for v in volumes],
        "pre_nawm_mode": pre_info["nawm_mode"], "post_nawm_mode": post_info["nawm_mode"],
        "config": asdict(cfg),
    }  # fmt: skip
    if cfg.region == "lesion" and region_name == "brain":
        info["note"] = "no lesion mask: candidates were searched in the whole brain (vessels and dura enhance too)"
    return mask, diff, info


def write_qc_png(
    path: Path | str, pre: np.ndarray, post: np.ndarray, diff: np.ndarray, mask: np.ndarray, title: str = ""
) -> Path:
    """A QC picture: up to four axial slices (those with the most enhancing voxels, else evenly spaced through
    the brain), columns pre-Gd T1w, post-Gd T1w, subtraction, post-Gd with the mask outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_slice = mask.sum(axis=(0, 1))
    if per_slice.any():
        slices = sorted(np.argsort(per_slice)[::-1][: min(4, int((per_slice > 0).sum()))].tolist())
    else:
        filled = np.flatnonzero(np.abs(pre).sum(axis=(0, 1)) > 0)
        ends = (filled[0], filled[-1]) if len(filled) else (0, pre.shape[2] - 1)
        slices = sorted(set(np.linspace(*ends, 6)[1:-1].astype(int).tolist()))
    fig, axes = plt.subplots(len(slices), 4, figsize=(10, 2.6 * len(slices)), squeeze=False)
    lim = float(np.percentile(np.abs(diff[diff != 0]), 99.5)) if (diff != 0).any() else 1.0

    def window(image: np.ndarray) -> dict[str, Any]:  # the brain's 1-99.5th percentiles: vessels do not darken it
        inside = image[image != 0]
        lo, hi = np.percentile(inside, [1, 99.5]) if inside.size else (0.0, 1.0)
        return {"cmap": "gray", "vmin": float(lo), "vmax": float(hi)}

    for row, z in zip(axes, slices, strict=True):
        for ax, data, name, kw in (
            (row[0], pre, "pre-Gd T1w", window(pre)),
            (row[1], post, "post-Gd T1w", window(post)),
            (row[2], diff, "post - pre (NAWM units)", {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
            (row[3], post, f"enhancing ({int(mask[:, :, z].sum())} voxels)", window(post)),
        ):
            ax.imshow(np.rot90(data[:, :, z]), **kw)
            ax.set_title(f"{name}, z={z}", fontsize=8)
            ax.axis("off")
        if mask[:, :, z].any():
            row[3].contour(np.rot90(mask[:, :, z].astype(float)), levels=[0.5], colors="red", linewidths=0.8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
