"""Label maps of training cases: tissue classes, lesions and active lesions in one uint8 map (:data:`LABELS`),
the input of the generative synthesisers (:mod:`gdfree.data.generative`) and of generator-based lesion
simulation. Tissue classes come from :func:`gdfree.arrays.tissue_map` (k-means of the T1w): an approximation,
not a segmentation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import tissue_map

__all__ = ["LABELS", "add_lesions", "case_label_map", "crop_label_map"]

LABELS = ("background", "CSF", "GM", "WM", "lesion", "active")
"""Label-map values 0..5 (``active``: an enhancing lesion voxel)."""


def case_label_map(
    image: np.ndarray, brain: np.ndarray, labels: dict[str, np.ndarray | None], t1_channel: int, seed: int = 0
) -> np.ndarray:
    """(X, Y, Z) uint8 label map of one case (values of :data:`LABELS`): tissues by a 3-class k-means of the
    T1w channel in the brain outside lesions, then lesion and active voxels from the labels."""
    lesion = labels.get("lesion")
    enhancing = labels.get("enhancing")
    lesion_any = np.zeros(brain.shape, bool)
    for lab in (lesion, enhancing):
        if lab is not None:
            lesion_any |= lab
    out = tissue_map(image[t1_channel], brain & ~lesion_any, seed)
    if lesion is not None:
        out[lesion & brain] = 4
    if enhancing is not None:
        out[enhancing & brain] = 5
    return out


def crop_label_map(sampler: Any, params: Any, label_map: np.ndarray) -> np.ndarray:
    """The label map of the patch at ``params`` (background outside the volume)."""
    src, dst = sampler.windows(params)
    out = np.zeros((sampler.patch,) * 3, np.uint8)
    out[dst] = label_map[src]
    return out


def add_lesions(
    label_map: np.ndarray, spacing_mm: Sequence[float], rng: np.random.Generator, *, count: int,
    active_probability: float,
) -> np.ndarray:  # fmt: skip
    """Draw up to ``count`` library lesions (real shapes, random flips and axis order) wholly inside the white
    matter of a label map (value 3), each labelled lesion (4) or, with ``active_probability``, active (5)."""
    from gdfree.data.lesion_sim import fits_inside, library_shape
    from gdfree.phantom.lesions import lesion_library

    out = label_map.copy()
    n_shapes = len(lesion_library())
    for _ in range(int(rng.integers(count + 1)) if count else 0):
        wm = out == 3
        candidates = np.argwhere(ndimage.binary_erosion(wm))
        if not candidates.size:
            break
        flips, order = [bool(f) for f in rng.random(3) < 0.5], [int(a) for a in rng.permutation(3)]
        shape = library_shape(int(rng.integers(n_shapes)), spacing_mm, flips, order)
        points = np.argwhere(shape)
        if not points.size:  # a lesion smaller than half a voxel at this spacing
            continue
        offset = candidates[rng.integers(len(candidates))] - np.round(points.mean(axis=0)).astype(int)
        value = 5 if rng.random() < active_probability else 4
        if fits_inside(points + offset, wm):
            out[tuple((points + offset).T)] = value
    return out
