"""Array helpers every layer uses, written once: numpy and scipy only (no torch, no file I/O).

Argument checks (:func:`as_mask`, :func:`as_spacing`, :func:`same_shape`), voxel size from an affine
(:func:`spacing_from_affine`), bounding boxes (:func:`bounding_box`), connected components under the one
connectivity rule (:data:`LESION_CONNECTIVITY`, :func:`label_components`), statistics in a mask
(:func:`mask_stats`, :func:`zscore`, :func:`robust_stats`, :func:`histogram_mode`, :func:`nawm_mask`), display
windows (:func:`window_range`), :func:`sigmoid` and :func:`logit`, and the 3-class tissue map
(:func:`tissue_map`). Arrays are (X, Y, Z) unless a docstring says otherwise; sizes in voxels unless the name
says mm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from gdfree.types import spacing_from_affine  # defined beside Volume (the io layer), offered here too

__all__ = [
    "LESION_CONNECTIVITY",
    "as_mask",
    "as_spacing",
    "bounding_box",
    "connectivity_structure",
    "distance_shell",
    "histogram_mode",
    "label_components",
    "logit",
    "mask_stats",
    "min_voxels",
    "nawm_mask",
    "robust_stats",
    "same_shape",
    "sigmoid",
    "spacing_from_affine",
    "tissue_map",
    "window_range",
    "zscore",
]

LESION_CONNECTIVITY = 6
"""Lesions are 6-connected components (voxels sharing a face), everywhere in gdfree unless a rule says otherwise:
predicted lesions, lesion tables, derived enhancing labels, lesion sampling and every metric, as the MSSEG
challenge's ``animaSegPerfAnalyzer`` counts them."""

_RANK = {6: 1, 18: 2, 26: 3}


def connectivity_structure(connectivity: int = LESION_CONNECTIVITY, ndim: int = 3) -> np.ndarray:
    """The structuring element of ``connectivity`` (6, 18 or 26 neighbours in 3-D; in 2-D 6 means 4, the faces).

    Raises:
        ValueError: another connectivity.
    """
    if connectivity not in _RANK:
        raise ValueError(f"connectivity: expected 6, 18 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, min(_RANK[connectivity], ndim))


def as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as a 3-D bool array; any non-zero voxel is foreground.

    Raises:
        ValueError: ``array`` is not 3-D or holds NaN.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D mask, got shape {array.shape}")
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError(f"{name}: the mask holds NaN")
    return array != 0


def as_spacing(spacing_mm: Sequence[float], name: str = "spacing_mm") -> tuple[float, float, float]:
    """Three positive, finite voxel sizes in mm.

    Raises:
        ValueError: not three values, or one is not positive and finite.
    """
    values = tuple(float(s) for s in np.asarray(spacing_mm, dtype=float).ravel())
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"{name}: expected three positive voxel sizes in mm, got {tuple(spacing_mm)}")
    return values[0], values[1], values[2]


def same_shape(*named: tuple[str, np.ndarray]) -> None:
    """Raise ValueError naming the arrays if their shapes differ."""
    shapes = {name: np.shape(a) for name, a in named}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"arrays must share one grid, got {listed}")


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] | np.ndarray = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel of an N-D ``mask``, grown by ``margin`` voxels (one
    value, or one per axis) and clipped to the array; None for an empty mask."""
    mask = np.asarray(mask)
    margins = [int(m) for m in np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))]
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        pad = margins[axis]
        box.append(slice(max(int(hits[0]) - pad, 0), min(int(hits[-1]) + 1 + pad, mask.shape[axis])))
    return tuple(box)


def distance_shell(mask: np.ndarray, spacing_mm: Sequence[float], inner_mm: float, outer_mm: float) -> np.ndarray:
    """Voxels outside ``mask`` whose distance to it (mm, under ``spacing_mm``) is in (inner_mm, outer_mm]."""
    distance = ndimage.distance_transform_edt(~np.asarray(mask, bool), sampling=spacing_mm)
    return (distance > inner_mm) & (distance <= outer_mm)


def min_voxels(min_volume_mm3: float, voxel_mm3: float) -> int:
    """Smallest voxel count of a component kept when components of ``min_volume_mm3`` or less are removed:
    floor(min_volume_mm3 / voxel_mm3) + 1 (strictly above the minimum, as anima counts); 1 for no minimum."""
    return math.floor(min_volume_mm3 / voxel_mm3) + 1 if min_volume_mm3 > 0 else 1


def label_components(
    mask: np.ndarray,
    spacing_mm: Sequence[float],
    connectivity: int = LESION_CONNECTIVITY,
    min_volume_mm3: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Label the connected components of a 3-D ``mask``, dropping those of ``min_volume_mm3`` or less.

    Returns:
        (labels, n): int32 labels 1..n in scan order (0 = background) and the number of components kept.

    Raises:
        ValueError: ``mask`` is not 3-D or holds NaN, bad ``spacing_mm`` or ``connectivity``.
    """
    mask = as_mask(mask, "mask")
    structure = connectivity_structure(connectivity)
    labels, n = ndimage.label(mask, structure=structure)
    labels = labels.astype(np.int32, copy=False)
    keep_from = min_voxels(min_volume_mm3, math.prod(as_spacing(spacing_mm)))
    if n and keep_from > 1:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        keep = sizes >= keep_from
        keep[0] = False
        new_ids = np.zeros(n + 1, np.int32)
        new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels, n = new_ids[labels], int(keep.sum())
    return labels, int(n)


def mask_stats(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean, standard deviation) of ``image`` inside ``mask`` in float64; a zero spread is returned as 1.0 so
    that it can divide. Raises ValueError for an empty mask."""
    values = np.asarray(image)[np.asarray(mask, bool)].astype(np.float64)
    if values.size == 0:
        raise ValueError("mask_stats: the mask is empty")
    std = float(values.std())
    return float(values.mean()), std if std > 0 else 1.0


def zscore(
    image: np.ndarray,
    mask: np.ndarray,
    clip: tuple[float, float] | None = None,
    stats: tuple[float, float] | None = None,
    outside: float | None = 0.0,
) -> np.ndarray:
    """``image`` in standard deviations from its mean inside ``mask`` (or from ``stats`` = (mean, std)),
    computed in float64, optionally clipped, ``outside`` the mask (None: left as computed), as float32."""
    mean, std = stats if stats is not None else mask_stats(image, mask)
    z = (np.asarray(image) - np.float64(mean)) / np.float64(std)
    if clip is not None:
        z = np.clip(z, *clip)
    if outside is not None:
        z = np.where(np.asarray(mask, bool), z, outside)
    return z.astype(np.float32)


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """(median, robust spread) of ``values``: the spread is 1.4826 x the median absolute deviation (the
    standard deviation of a normal sample), else the standard deviation, else 1e-6, so that it can divide."""
    values = np.asarray(values)
    centre = float(np.median(values))
    spread = float(1.4826 * np.median(np.abs(values - centre))) or float(values.std()) or 1e-6
    return centre, spread


def histogram_mode(values: np.ndarray) -> float:
    """Mode of a smoothed 256-bin histogram between the 1st and 99th percentiles of the values above 5% of the
    99th percentile (background zeros inside a generous brain mask of a skull-stripped image are not tissue).
    On T1w, T2w and FLAIR white matter is the largest tissue, so inside normal-appearing white matter
    (:func:`nawm_mask`) this is its intensity."""
    top = float(np.percentile(values, 99))
    if top > 0 and (values > 0.05 * top).sum() > 100:
        values = values[values > 0.05 * top]
    lo, hi = np.percentile(values, [1, 99])
    if hi <= lo:
        return float(lo)
    counts, edges = np.histogram(values, bins=256, range=(lo, hi))
    smooth = ndimage.gaussian_filter1d(counts.astype(float), 3)
    i = int(np.argmax(smooth))
    return float((edges[i] + edges[i + 1]) / 2)


def nawm_mask(brain: np.ndarray, lesion: np.ndarray | None = None, dilate: int = 2) -> np.ndarray:
    """Brain voxels away from lesions (``lesion`` dilated by ``dilate`` voxels) and from the brain edge (2 voxels
    eroded when the brain holds over 1,000 voxels): normal-appearing tissue, mostly white matter."""
    inner = ndimage.binary_erosion(brain, iterations=2) if brain.sum() > 1000 else brain.copy()
    if lesion is not None and lesion.any():
        inner &= ~ndimage.binary_dilation(lesion, iterations=dilate)
    return inner


def window_range(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    symmetric: bool = False,
) -> tuple[float, float]:
    """The display window (lo, hi) of ``image``: its ``percentiles`` inside ``mask`` (everywhere for None or an
    empty mask), hi >= lo + 1e-6; ``symmetric``: (-top, top) with top the upper percentile of the absolute
    values (for differences shown on a diverging map)."""
    image = np.asarray(image)
    inside = np.asarray(mask, bool) if mask is not None else None
    values = image[inside] if inside is not None and inside.any() else image.ravel()
    if symmetric:
        top = float(np.percentile(np.abs(values), percentiles[1])) if values.size else 1.0
        return -top, max(top, 1e-6)
    lo, hi = np.percentile(values, percentiles) if values.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-6))


def sigmoid(z: np.ndarray | float, clip: float = 60.0, dtype: type = np.float32) -> np.ndarray:
    """1 / (1 + exp(-z)) computed in float64 with ``z`` clipped to +-``clip`` (no overflow warning), returned as
    ``dtype`` (float64 for thresholds and other scalars that must not be rounded)."""
    z = np.clip(np.asarray(z, dtype=np.float64), -clip, clip)
    return (1.0 / (1.0 + np.exp(-z))).astype(dtype)


def logit(p: float, eps: float = 0.0) -> float:
    """log(p / (1 - p)) of one probability, clipped to [eps, 1 - eps] first (eps = 0: p must be in (0, 1))."""
    p = min(max(float(p), eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def tissue_map(image: np.ndarray, region: np.ndarray, seed: int = 0, max_samples: int = 20_000) -> np.ndarray:
    """(X, Y, Z) uint8 tissue classes of a T1w ``image`` inside ``region``: 1 CSF, 2 grey matter, 3 white matter
    by a 3-class k-means (scikit-learn, ``max_samples`` voxels drawn with ``seed``) ranked by intensity, 0
    elsewhere or when the region holds fewer than 3 voxels."""
    from sklearn.cluster import KMeans

    out = np.zeros(region.shape, np.uint8)
    values = image[region].reshape(-1, 1)
    if values.shape[0] >= 3:
        sample = values[np.random.default_rng(seed).permutation(values.shape[0])[:max_samples]]
        km = KMeans(3, n_init=3, random_state=seed).fit(sample)
        order = np.argsort(km.cluster_centers_[:, 0])  # darkest CSF, then GM, then WM on T1w
        rank = np.empty(3, np.uint8)
        rank[order] = np.arange(1, 4, dtype=np.uint8)
        out[region] = rank[km.predict(values)]
    return out
