"""Lesion removal: a lesion inpainted from its surroundings (harmonic fill of the lesion and a one-voxel rim,
plus noise of the surroundings' spread), its labels cleared: a negative example."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import bounding_box, distance_shell, label_components

__all__ = ["remove_lesion", "sample_removal"]


def sample_removal(lesion_mask: np.ndarray, spacing_mm: Sequence[float], rng: np.random.Generator) -> dict[str, Any]:
    """Draw which lesion (6-connected component of ``lesion_mask``, 1-based) to remove, and a noise seed.

    Raises:
        ValueError: no lesion.
    """
    n = label_components(lesion_mask, spacing_mm)[1]
    if n == 0:
        raise ValueError("sample_removal: no lesion to remove")
    return {"lesion_id": int(rng.integers(1, n + 1)), "noise_seed": int(rng.integers(2**31))}


def remove_lesion(
    params: Mapping[str, Any],
    image: np.ndarray,
    labels: Mapping[str, np.ndarray | None],
    brain: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    lesion_key: str = "lesion",
    iterations: int = 200,
) -> tuple[np.ndarray, dict[str, np.ndarray | None], np.ndarray]:
    """Inpaint lesion ``lesion_id`` and a one-voxel rim (its partial volume) from the brain tissue around it:
    a harmonic fill (Jacobi iterations with the surroundings fixed) plus noise of the surroundings' spread
    (1.4826 x their median absolute deviation: a sulcus beside the lesion does not inflate it).
    Every label is cleared in the filled region. Returns (image, labels, filled region).

    The surroundings are whatever tissue lies there (white matter for most lesions; grey matter or CSF
    for juxtacortical and periventricular ones), not a tissue model.
    """
    lesion_labels, n = label_components(np.asarray(labels[lesion_key], bool), spacing_mm)
    lesion_id = int(params["lesion_id"])
    if not 1 <= lesion_id <= n:
        raise ValueError(f"remove_lesion: lesions 1..{n}, got {lesion_id}")
    region = ndimage.binary_dilation(lesion_labels == lesion_id) & brain
    box = bounding_box(region, 3)
    if box is None:
        raise ValueError(f"remove_lesion: lesion {lesion_id} lies outside the brain")
    hole = region[box]
    known = brain[box] & ~hole & (lesion_labels[box] == 0)
    around = distance_shell(hole, spacing_mm, 0.0, 3.0) & known
    rng = np.random.default_rng(int(params["noise_seed"]))
    out = image.copy()
    for c in range(image.shape[0]):
        patch = out[c][box].astype(np.float64)
        source = patch[around] if around.any() else patch[known] if known.any() else patch
        fill_value = float(np.median(source))
        work = np.where(hole, fill_value, patch)
        weights = known | hole
        for _ in range(iterations):  # Jacobi: each hole voxel becomes the mean of its known/hole neighbours
            num = ndimage.uniform_filter(np.where(weights, work, 0.0), 3, mode="constant")
            den = ndimage.uniform_filter(weights.astype(np.float64), 3, mode="constant")
            work = np.where(hole, num / np.maximum(den, 1e-9), patch)
        values = patch[around]
        sd = 1.4826 * float(np.median(np.abs(values - np.median(values)))) if values.size > 1 else 0.0  # robust
        work[hole] += sd * rng.standard_normal(int(hole.sum()))
        out[c][box] = work.astype(np.float32)
    filled = np.zeros(brain.shape, bool)
    filled[box] = hole
    new_labels = {name: None if lab is None else np.asarray(lab, bool) & ~filled for name, lab in labels.items()}
    return out, new_labels, filled
