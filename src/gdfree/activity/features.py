"""Features of each visible lesion for the lesion-level activity framing.

A lesion is a connected component of an all-lesion mask (reference, or predicted by the lesion head) under
the one lesion rule (:data:`gdfree.metrics.lesions.LESION_CONNECTIVITY`). Per lesion and per input channel
(normalised as the network sees it): intensity statistics inside the lesion, in its rim (lesion voxels with
a non-lesion face neighbour) and core, and in two shells around it (1-2 and 3-4 voxels out, other lesions
excluded), the lesion-minus-shell contrast and the mean gradient magnitude inside (texture); shape: volume,
extent (volume over bounding box), elongation (largest over smallest principal axis), surface share; and,
when probability maps of a network are given, the mean and maximum of each inside the lesion and in the
inner shell. A lesion is active when any of its voxels carries the enhancing label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from gdfree.arrays import LESION_CONNECTIVITY, connectivity_structure, label_components

__all__ = ["feature_names", "lesion_activity_labels", "lesion_features"]

_STATS = ("mean", "std", "p10", "p50", "p90", "rim", "core", "shell1", "shell2", "contrast", "gradient")
_SHAPE = ("log_volume_mm3", "extent", "elongation", "surface_share")


def feature_names(modalities: Sequence[str], prob_heads: Sequence[str] = ()) -> list[str]:
    """Column names of :func:`lesion_features`, in order."""
    names = list(_SHAPE)
    names += [f"{m}_{s}" for m in modalities for s in _STATS]
    names += [f"net_{h}_{s}" for h in prob_heads for s in ("mean", "max", "shell_mean")]
    return names


def lesion_features(
    image: np.ndarray,
    lesion_labels: np.ndarray,
    n_lesions: int,
    spacing_mm: Sequence[float],
    probabilities: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """(n_lesions, F) float32 features of lesions 1..n of ``lesion_labels`` (columns: :func:`feature_names`).

    Args:
        image: (C, X, Y, Z) normalised input channels.
        lesion_labels: (X, Y, Z) int, 0 background, 1..n lesions.
        spacing_mm: voxel size.
        probabilities: head -> (X, Y, Z) probability map of a network (optional; in the given order).
    """
    probabilities = probabilities or {}
    if image.ndim != 4 or image.shape[1:] != lesion_labels.shape:
        raise ValueError(f"lesion_features: image (C, X, Y, Z) must match labels {lesion_labels.shape}, "
                         f"got {image.shape}")  # fmt: skip
    voxel_mm3 = float(np.prod(spacing_mm))
    any_lesion = lesion_labels > 0
    gradients = [np.sqrt(sum(g**2 for g in np.gradient(image[c], *spacing_mm))) for c in range(image.shape[0])]
    boxes = ndimage.find_objects(lesion_labels, max_label=n_lesions)
    rows = []
    width = len(_SHAPE) + image.shape[0] * len(_STATS) + 3 * len(probabilities)
    struct = connectivity_structure(LESION_CONNECTIVITY)
    shape = lesion_labels.shape
    for i, box in enumerate(boxes, start=1):
        if box is None:
            rows.append(np.full(width, np.nan))
            continue
        pad = tuple(slice(max(s.start - 5, 0), min(s.stop + 5, n)) for s, n in zip(box, shape, strict=True))
        region = lesion_labels[pad] == i
        others = any_lesion[pad] & ~region
        grown = [region]
        for _ in range(4):
            grown.append(ndimage.binary_dilation(grown[-1], struct))
        shell1 = grown[2] & ~region & ~others
        shell2 = grown[4] & ~grown[2] & ~others
        core = ndimage.binary_erosion(region, struct)
        rim = region & ~core
        n = int(region.sum())
        coords = np.argwhere(region) * np.asarray(spacing_mm)
        if n >= 3:
            eig = np.sort(np.linalg.eigvalsh(np.cov(coords.T) + 1e-6 * np.eye(3)))
            elongation = float(np.sqrt(eig[-1] / eig[0]))
        else:
            elongation = 1.0
        extent = n / float(np.prod([s.stop - s.start for s in box]))
        row = [np.log(n * voxel_mm3), extent, elongation, rim.sum() / n]
        for c in range(image.shape[0]):
            values = image[c][pad]
            inside = values[region]
            p10, p50, p90 = np.percentile(inside, [10, 50, 90])
            mean = float(inside.mean())
            s1 = float(values[shell1].mean()) if shell1.any() else mean
            s2 = float(values[shell2].mean()) if shell2.any() else s1
            row += [mean, float(inside.std()), p10, p50, p90, float(values[rim].mean()),
                    float(values[core].mean()) if core.any() else mean, s1, s2, mean - s1,
                    float(gradients[c][pad][region].mean())]  # fmt: skip
        for prob in probabilities.values():
            p = prob[pad]
            row += [float(p[region].mean()), float(p[region].max()), float(p[shell1].mean()) if shell1.any() else 0.0]
        rows.append(np.asarray(row, np.float64))
    return np.asarray(rows, np.float32).reshape(len(rows), width)


def lesion_activity_labels(lesion_labels: np.ndarray, n_lesions: int, enhancing: np.ndarray) -> np.ndarray:
    """(n_lesions,) bool: whether each lesion holds at least one voxel of the ``enhancing`` mask."""
    hits = ndimage.maximum(enhancing.astype(np.uint8), lesion_labels, np.arange(1, n_lesions + 1))
    return np.asarray(hits, float).reshape(n_lesions) > 0


def label_case_lesions(lesion: np.ndarray, spacing_mm: Sequence[float], min_volume_mm3: float = 0.0) -> tuple[
    np.ndarray, int]:  # fmt: skip
    """The lesions of an all-lesion mask under the one lesion rule (6-connected components)."""
    return label_components(lesion, spacing_mm, LESION_CONNECTIVITY, min_volume_mm3)
