"""Argument checks shared by the metric functions: each message names the argument and what was expected."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["as_mask", "as_spacing", "bounding_box", "same_shape"]


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
    return values  # type: ignore[return-value]


def same_shape(*named: tuple[str, np.ndarray]) -> None:
    """Raise ValueError naming the arrays if their shapes differ."""
    shapes = {name: np.shape(a) for name, a in named}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"arrays must share one grid, got {listed}")


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` voxels; None if empty."""
    boxes = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        boxes.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(boxes)
