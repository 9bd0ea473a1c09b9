"""CarveMix (Zhang et al., MICCAI 2021): a lesion and a margin of the tissue around it carved out of one case and
pasted into another, labels included. The carved region is every voxel within ``margin_mm`` of one lesion (a
6-connected component, :func:`gdfree.arrays.label_components`); it is pasted where it lies wholly inside the
target's brain; each channel is shifted so that the median of the carved margin equals the median of the tissue it
replaces, so the lesion keeps its contrast to its surroundings rather than the source's absolute level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import label_components

__all__ = ["carved_region", "carvemix", "fits_inside", "sample_carvemix"]


def carved_region(
    lesion_mask: np.ndarray, lesion_id: int, margin_mm: float, spacing_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The lesion ``lesion_id`` (1-based, components of ``lesion_mask``) and every voxel within ``margin_mm``
    of it; returns (region, lesion) bool masks."""
    labels, n = label_components(lesion_mask, spacing_mm)
    if not 1 <= lesion_id <= n:
        raise ValueError(f"lesion_id: the source has lesions 1..{n}, got {lesion_id}")
    lesion = labels == lesion_id
    distance = ndimage.distance_transform_edt(~lesion, sampling=spacing_mm)
    return distance <= margin_mm, lesion


def sample_carvemix(
    source_lesion: np.ndarray,
    target_brain: np.ndarray,
    spacing_mm: Sequence[float],
    rng: np.random.Generator,
    *,
    min_margin_mm: float = 1.0,
    max_margin_mm: float = 3.0,
    tries: int = 100,
) -> dict[str, Any]:
    """Draw which source lesion, how much margin (uniform in [``min_margin_mm``, ``max_margin_mm``]: at least
    one voxel of surroundings at 1 mm, so the contrast can be matched), and where in the target it goes.

    Raises:
        ValueError: the source has no lesion, or no place in the target brain holds the region.
    """
    n = label_components(source_lesion, spacing_mm)[1]
    if n == 0:
        raise ValueError("sample_carvemix: the source case has no lesion to carve")
    lesion_id = int(rng.integers(1, n + 1))
    margin = float(rng.uniform(min_margin_mm, max_margin_mm))
    region, _ = carved_region(source_lesion, lesion_id, margin, spacing_mm)
    points = np.argwhere(region)
    centre = np.round(points.mean(axis=0)).astype(int)
    candidates = np.argwhere(target_brain)
    for _ in range(tries):
        offset = candidates[rng.integers(len(candidates))] - centre
        if fits_inside(points + offset, target_brain):
            return {"lesion_id": lesion_id, "margin_mm": margin, "offset_vox": [int(o) for o in offset]}
    raise ValueError(f"sample_carvemix: no place in the target brain holds lesion {lesion_id} after {tries} tries")


def fits_inside(points: np.ndarray, brain: np.ndarray) -> bool:
    """Whether every (N, 3) voxel index lies inside the grid and inside ``brain``."""
    inside = np.all((points >= 0) & (points < np.array(brain.shape)), axis=1)
    return bool(inside.all() and brain[tuple(points.T)].all())


def carvemix(
    params: Mapping[str, Any],
    source_image: np.ndarray,
    source_labels: Mapping[str, np.ndarray],
    target_image: np.ndarray,
    target_labels: Mapping[str, np.ndarray],
    target_brain: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    lesion_key: str = "lesion",
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Paste the carved source region into the target; returns (image, labels, pasted region in the target).

    Args:
        params: from :func:`sample_carvemix`.
        source_image, target_image: (C, X, Y, Z), same channels and voxel size (grids may differ in shape).
        source_labels, target_labels: label name -> (X, Y, Z) bool; every target label is replaced inside the
            pasted region by the source's (a label the source lacks is cleared there).
        lesion_key: the label whose components are carved.

    Raises:
        ValueError: channels differ, or the region does not lie inside the target brain.
    """
    if source_image.shape[0] != target_image.shape[0]:
        raise ValueError(f"carvemix: {source_image.shape[0]} source channels, {target_image.shape[0]} in the target")
    region, lesion = carved_region(source_labels[lesion_key], int(params["lesion_id"]), float(params["margin_mm"]),
                                   spacing_mm)  # fmt: skip
    src = np.argwhere(region)
    dst = src + np.asarray(params["offset_vox"], int)
    if not fits_inside(dst, target_brain):
        raise ValueError("carvemix: the carved region does not lie inside the target brain at this offset")
    src_idx, dst_idx = tuple(src.T), tuple(dst.T)
    image = target_image.copy()
    margin = ~lesion[src_idx]  # the carved tissue around the lesion
    for c in range(image.shape[0]):
        values = source_image[c][src_idx]
        shift = 0.0
        if margin.any():
            shift = float(np.median(target_image[c][dst_idx][margin]) - np.median(values[margin]))
        image[c][dst_idx] = values + shift
    labels = {}
    for name, target in target_labels.items():
        out = np.asarray(target, bool).copy()
        source = source_labels.get(name)
        out[dst_idx] = np.asarray(source, bool)[src_idx] if source is not None else False
        labels[name] = out
    pasted = np.zeros(target_brain.shape, bool)
    pasted[dst_idx] = True
    return image, labels, pasted
