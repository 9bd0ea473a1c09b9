"""What pattern the network uses: lesion-centred radial profiles of signed attributions.

For each lesion, every voxel near it gets a signed distance to the lesion's border in mm (negative inside,
positive outside; voxels of other lesions and outside the brain are left out). A modality's profile is the
mean signed attribution in distance bins; the cohort pattern averages the lesion profiles of a group
(e.g. predicted active vs predicted inactive). A perilesional cue (oedema-like FLAIR rim) shows as a peak
outside the border at its radius; a cue inside the lesion (T1w iso-intensity) as a peak at negative
distances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DEFAULT_BINS_MM", "cohort_profiles", "lesion_profile", "profile_png", "signed_distance_mm"]

DEFAULT_BINS_MM = (-8.0, -4.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 14.0)
"""Bin edges in mm from the lesion border (bins are (low, high]; inside the lesion is <= 0)."""


def signed_distance_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Distance of each voxel centre to the lesion border in mm: outside, the distance to the nearest lesion
    voxel (> 0); inside, minus the distance to the nearest non-lesion voxel (<= 0, -spacing at the rim)."""
    from scipy import ndimage

    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_mm)
    return np.where(mask, -inside, outside).astype(np.float32)


def lesion_profile(
    attribution: np.ndarray,
    lesion: np.ndarray,
    valid: np.ndarray,
    spacing_mm: Sequence[float],
    bins_mm: Sequence[float] = DEFAULT_BINS_MM,
) -> np.ndarray:
    """Mean of a (X, Y, Z) map per distance bin around one lesion, NaN for empty bins; shape (len(bins) - 1,).

    ``valid``: voxels that may count (brain, not another lesion); the lesion's own voxels always count.
    """
    distance = signed_distance_mm(lesion, spacing_mm)
    edges = np.asarray(bins_mm, dtype=np.float64)
    keep = (valid | lesion) & (distance > edges[0]) & (distance <= edges[-1])
    which = np.searchsorted(edges, distance[keep], side="left") - 1
    sums = np.bincount(which, attribution[keep], minlength=edges.size - 1)[: edges.size - 1]
    counts = np.bincount(which, minlength=edges.size - 1)[: edges.size - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def cohort_profiles(
    entries: Sequence[dict[str, Any]], bins_mm: Sequence[float] = DEFAULT_BINS_MM
) -> list[dict[str, Any]]:
    """Average lesion profiles per (group, method, modality).

    ``entries``: dicts with ``group``, ``method``, ``modality`` and ``profile`` (from :func:`lesion_profile`).
    Each lesion profile is first scaled by its largest absolute bin so that every lesion weighs the same.

    Returns:
        rows with group, method, modality, bin_low_mm, bin_high_mm, mean (scaled), lesions.
    """
    rows = []
    keys = list(dict.fromkeys((e["group"], e["method"], e["modality"]) for e in entries))
    for group, method, modality in keys:
        stack = np.array([e["profile"] for e in entries
                          if (e["group"], e["method"], e["modality"]) == (group, method, modality)])  # fmt: skip
        scale = np.nanmax(np.abs(stack), axis=1, keepdims=True)
        scaled = stack / np.where(scale > 0, scale, 1.0)
        counts = np.sum(~np.isnan(scaled), axis=0)
        mean = np.where(counts > 0, np.nansum(scaled, axis=0) / np.maximum(counts, 1), np.nan)
        for b, value in enumerate(mean):
            rows.append({"group": group, "method": method, "modality": modality,
                         "bin_low_mm": float(bins_mm[b]), "bin_high_mm": float(bins_mm[b + 1]),
                         "mean": float(value), "lesions": len(stack)})  # fmt: skip
    return rows


def profile_png(rows: Sequence[dict[str, Any]], path: Any, title: str = "Lesion-centred attribution profiles") -> Any:
    """One panel per (method, group), one line per modality, x = distance from the lesion border (mm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdfree.io.images import save_figure

    panels = list(dict.fromkeys((r["method"], r["group"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 0.4, 2.8), squeeze=False)
    for ax, (method, group) in zip(axes[0], panels, strict=True):
        sub = [r for r in rows if (r["method"], r["group"]) == (method, group)]
        for modality in dict.fromkeys(r["modality"] for r in sub):
            line = [r for r in sub if r["modality"] == modality]
            centre = [(r["bin_low_mm"] + r["bin_high_mm"]) / 2 for r in line]
            ax.plot(centre, [r["mean"] for r in line], marker="o", ms=3, label=modality)
        ax.axvline(0, color="k", lw=0.6, ls=":")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"{method}, {group} ({sub[0]['lesions']} lesions)", fontsize=8)
        ax.set_xlabel("mm from the lesion border", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
