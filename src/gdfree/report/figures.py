"""The report's pictures (matplotlib, Agg): axial mosaics with overlays, input QC and the cohort's curves.

Volumes are turned to the closest RAS orientation first (nibabel), so every mosaic is axial whatever the
acquired orientation, shown in neurological convention (the patient's left on the left, anterior up).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.arrays import bounding_box, window_range
from gdfree.io.colours import MASK_COLOURS
from gdfree.io.images import save_figure

__all__ = [
    "calibration_png",
    "froc_png",
    "histogram_png",
    "mosaic_png",
    "mosaic_slices",
    "registration_png",
    "retention_png",
    "roc_png",
    "to_ras",
]


def to_ras(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``data`` reordered and flipped to the closest RAS orientation of ``affine`` (no resampling)."""
    import nibabel as nib

    orientation = nib.orientations.io_orientation(np.asarray(affine, float))
    return nib.orientations.apply_orientation(np.asarray(data), orientation)


def _rgb(name: str) -> tuple[float, float, float]:
    r, g, b = MASK_COLOURS[name]
    return r / 255, g / 255, b / 255


def mosaic_slices(brain: np.ndarray, focus: Sequence[int] = (), n: int = 12) -> list[int]:
    """``n`` axial slice indices: the ``focus`` slices first (e.g. the top lesions' centroids, at most half),
    then evenly spaced from 15% to 90% of the brain's height; sorted, no repeats."""
    zs = np.nonzero(np.asarray(brain).any(axis=(0, 1)))[0]
    lo, hi = (int(zs.min()), int(zs.max())) if zs.size else (0, brain.shape[2] - 1)
    chosen = list(dict.fromkeys(int(z) for z in focus if 0 <= z < brain.shape[2]))[: n // 2]
    span = np.linspace(lo + 0.15 * (hi - lo), hi - 0.1 * (hi - lo), n)
    for z in np.round(span).astype(int):
        if len(chosen) >= n:
            break
        if all(abs(z - c) > max((hi - lo) // (3 * n), 1) for c in chosen):
            chosen.append(int(z))
    return sorted(set(chosen))


def _plane_box(brain: np.ndarray, margin: int = 3) -> tuple[slice, ...]:
    """The in-plane (x, y) box of the brain over all slices, widened by ``margin`` voxels."""
    return bounding_box(np.asarray(np.asarray(brain).any(axis=2)), margin) or (slice(None), slice(None))


def mosaic_png(
    path: Path,
    image: np.ndarray,
    brain: np.ndarray,
    slices: Sequence[int],
    *,
    filled: dict[str, np.ndarray] | None = None,
    outlined: dict[str, np.ndarray] | None = None,
    heat: np.ndarray | None = None,
    heat_label: str = "",
    title: str = "",
    symmetric: bool = False,
) -> Path:
    """An axial mosaic of ``image`` (RAS arrays, see :func:`to_ras`) at ``slices``: masks in ``filled``
    painted, masks in ``outlined`` drawn as contours (colours of :data:`MASK_COLOURS` by key), ``heat`` (a
    map in [0, 1]) in magma above 0.05. ``symmetric``: grey window centred on 0 (a difference image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cols = min(len(slices), 6) or 1
    rows = max(-(-len(slices) // cols), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.4 * rows), facecolor="black", squeeze=False)
    fig.subplots_adjust(
        left=0.01, right=0.92 if heat is not None else 0.99, bottom=0.01, top=0.92, wspace=0.02, hspace=0.08
    )
    lo, hi = window_range(image, brain, symmetric=symmetric)
    shown = None
    xy = _plane_box(brain)
    for ax, z in zip(axes.ravel(), list(slices) + [None] * (rows * cols - len(slices)), strict=True):
        ax.set_axis_off()
        if z is None:
            continue
        ax.imshow(np.rot90(image[xy][:, :, z]), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for key, mask in (filled or {}).items():
            m = np.rot90(mask[xy][:, :, z] > 0)
            ax.imshow(np.ma.masked_where(~m, m), cmap=ListedColormap([_rgb(key)]), alpha=0.65,
                      interpolation="nearest", vmin=0, vmax=1)  # fmt: skip
        for key, mask in (outlined or {}).items():
            m = np.rot90(mask[xy][:, :, z] > 0).astype(float)
            if m.any() and not m.all():
                ax.contour(m, levels=[0.5], colors=[_rgb(key)], linewidths=1.2)
        if heat is not None:
            h = np.rot90(heat[xy][:, :, z])
            shown = ax.imshow(np.ma.masked_where(h < 0.05, h), cmap="magma", vmin=0, vmax=1, alpha=0.8,
                              interpolation="nearest")  # fmt: skip
        ax.text(2, 2, f"z {z}", color="white", fontsize=7, va="top")
        ax.text(0.01, 0.5, "L", color="white", fontsize=7, transform=ax.transAxes)
    if title:
        fig.suptitle(title, color="white", fontsize=9)
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
        bar.set_label(heat_label, color="white", fontsize=8)
        bar.ax.tick_params(colors="white", labelsize=7)
    return save_figure(fig, path, dpi=90)


def registration_png(
    path: Path, fixed: np.ndarray, moving: np.ndarray, brain: np.ndarray, names: tuple[str, str]
) -> Path:
    """Registration QC: ``moving`` in grey with the edges of ``fixed`` (Canny, red) on three central planes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.feature import canny

    centre = [int(np.mean(i)) for i in np.nonzero(brain)] if brain.any() else [s // 2 for s in fixed.shape]
    lo, hi = window_range(moving, brain)
    flo, fhi = window_range(fixed, brain)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3), facecolor="black")
    planes = [(fixed[centre[0]], moving[centre[0]]), (fixed[:, centre[1]], moving[:, centre[1]]),
              (fixed[:, :, centre[2]], moving[:, :, centre[2]])]  # fmt: skip
    for ax, (f, m), name in zip(axes, planes, ("sagittal", "coronal", "axial"), strict=True):
        ax.set_axis_off()
        ax.imshow(np.rot90(m), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        edges = canny(np.clip((f - flo) / (fhi - flo), 0, 1), sigma=2.0)
        ax.imshow(np.ma.masked_where(~np.rot90(edges), np.rot90(edges)), cmap="autumn", alpha=0.9,
                  interpolation="nearest")  # fmt: skip
        ax.set_title(name, color="white", fontsize=8)
    fig.suptitle(f"{names[1]} (grey) with the edges of {names[0]} (red)", color="white", fontsize=9)
    return save_figure(fig, path, dpi=90)


def histogram_png(path: Path, images: dict[str, np.ndarray], brain: np.ndarray) -> Path:
    """Intensity histograms of each input inside the brain (raw units, one panel per modality)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(images), 1), figsize=(2.6 * max(len(images), 1), 2.2), squeeze=False)
    for ax, (name, data) in zip(axes[0], images.items(), strict=False):
        values = data[brain] if brain.any() else data.ravel()
        values = values[np.isfinite(values)]
        ax.hist(values, bins=100, color="0.3")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return fig, ax


def froc_png(path: Path, fp_per_scan: Sequence[float], sensitivity: Sequence[float], marks: Sequence[float]) -> Path:
    """FROC: lesion sensitivity against false-positive lesions per scan over the probability thresholds."""
    fig, ax = _axes("FROC (enhancing lesions)", "false-positive lesions per scan", "lesion sensitivity")
    order = np.argsort(np.asarray(fp_per_scan, float), kind="stable")
    ax.plot(np.asarray(fp_per_scan, float)[order], np.asarray(sensitivity, float)[order], "o-", ms=3)
    for m in marks:
        ax.axvline(float(m), color="0.6", lw=0.8, ls=":")
    ax.set_ylim(-0.02, 1.02)
    return save_figure(fig, path, dpi=90)


def roc_png(path: Path, fpr: np.ndarray, tpr: np.ndarray, band: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
            auc_text: str) -> Path:  # fmt: skip
    """Patient ROC with, when given, a pointwise bootstrap band (grid of false-positive rates, low, high)."""
    fig, ax = _axes(f"Patient ROC ({auc_text})", "1 - specificity", "sensitivity")
    if band is not None:
        grid, low, high = band
        ax.fill_between(grid, low, high, color="C0", alpha=0.2, step="post", label="95% bootstrap band")
    ax.step(fpr, tpr, where="post", color="C0", label="ROC")
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path, dpi=90)


def calibration_png(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Reliability diagram of the voxel probabilities (bins of ``reliability.tsv``; empty bins left out)."""
    fig, ax = _axes("Calibration (voxels in the brain)", "mean predicted probability", "observed enhancing fraction")
    used = [r for r in rows if float(r["count"]) > 0]
    x = [float(r["mean_prob"]) for r in used]
    y = [float(r["positive_fraction"]) for r in used]
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.plot(x, y, "o-", ms=4)
    for xi, yi, r in zip(x, y, used, strict=True):
        ax.annotate(f"{int(float(r['count'])):,}", (xi, yi), fontsize=5, xytext=(2, 2), textcoords="offset points")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    return save_figure(fig, path, dpi=90)


def retention_png(path: Path, fractions: np.ndarray, curves: dict[str, np.ndarray]) -> Path:
    """nDSC retention curves: each case's in grey, their mean in colour."""
    fig, ax = _axes("Retention (voxels by rising uncertainty)", "fraction retained", "nDSC")
    for curve in curves.values():
        ax.plot(fractions, curve, color="0.7", lw=0.7)
    if curves:
        ax.plot(fractions, np.mean(list(curves.values()), axis=0), color="C3", lw=2, label="mean over cases")
        ax.legend(fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    return save_figure(fig, path, dpi=90)
