"""Voxel-wise overlap and surface-distance metrics between a predicted and a reference mask.

Every function takes 3-D masks on one grid (any non-zero voxel is foreground) and, where distances or
volumes matter, ``spacing_mm``. What each returns for empty masks is written in its docstring; "empty"
means no foreground voxel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from gdfree.arrays import as_mask, as_spacing, bounding_box, connectivity_structure, same_shape

__all__ = ["NDSC_REFERENCE_LOAD", "dice", "normalized_dice", "surface_distances", "voxel_metrics"]

NDSC_REFERENCE_LOAD = 0.001
"""Reference lesion load r of the normalised Dice (Shifts 2022): the fraction of voxels that are lesion."""


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = as_mask(pred, "pred"), as_mask(ref, "ref")
    same_shape(("pred", pred), ("ref", ref))
    return pred, ref


def _counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """(true positive, false positive, false negative) voxel counts."""
    tp = int(np.count_nonzero(pred & ref))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(ref)) - tp


def _dice(tp: int, fp: int, fn: int) -> float:
    return 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2.0 * tp + fp + fn)


def _ndsc(tp: int, fp: int, fn: int, n_all: int, reference_load: float) -> float:
    n_ref = tp + fn
    if tp + fp + fn == 0:
        return 1.0
    k = 1.0 if n_ref == 0 else (1.0 - reference_load) * n_ref / (reference_load * (n_all - n_ref))
    return 2.0 * tp / (2.0 * tp + k * fp + fn)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩R| / (|P| + |R|).

    Empty inputs: both empty -> 1.0; exactly one empty -> 0.0.
    """
    pred, ref = _pair(pred, ref)
    return _dice(*_counts(pred, ref))


def normalized_dice(pred: np.ndarray, ref: np.ndarray, reference_load: float = NDSC_REFERENCE_LOAD) -> float:
    """Normalised Dice nDSC of Shifts 2022 (Malinin et al.), which does not grow with the lesion load.

    False positives are rescaled by k = (1 - r) |R| / (r (N - |R|)), N the number of voxels given, so the
    score is the Dice the same sensitivity and precision would give on a scan whose lesion load is r:
    nDSC = 2 TP / (2 TP + k FP + FN). Pass only the voxels that count (e.g. ``array[brain]``) to change N;
    Shifts computes it over the whole image.

    Empty inputs (as Shifts): both empty -> 1.0; reference empty, prediction not -> k = 1, so 0.0;
    prediction empty, reference not -> 0.0.
    """
    pred, ref = np.asarray(pred) != 0, np.asarray(ref) != 0
    same_shape(("pred", pred), ("ref", ref))
    if not 0.0 < reference_load < 1.0:
        raise ValueError(f"reference_load: expected a fraction in (0, 1), got {reference_load}")
    return _ndsc(*_counts(pred, ref), pred.size, reference_load)


def voxel_metrics(pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float]:
    """Overlap and volume metrics of one case.

    Returns:
        ``dice``, ``ndsc`` (see :func:`dice`, :func:`normalized_dice`); ``sensitivity`` TP/|R| (NaN if the
        reference is empty); ``precision`` TP/|P| (NaN if the prediction is empty); ``volume_pred_mm3``,
        ``volume_ref_mm3``, ``volume_difference_mm3`` (pred - ref); ``avd_percent``, the absolute volume
        difference |V_P - V_R| / V_R x 100 of the MSSEG/WMH challenges (0.0 if both are empty, NaN if only
        the reference is).
    """
    pred, ref = _pair(pred, ref)
    voxel_mm3 = math.prod(as_spacing(spacing_mm))
    tp, fp, fn = _counts(pred, ref)
    v_pred, v_ref = (tp + fp) * voxel_mm3, (tp + fn) * voxel_mm3
    if tp + fn:
        avd = abs(v_pred - v_ref) / v_ref * 100.0
    else:
        avd = 0.0 if tp + fp == 0 else math.nan
    return {
        "dice": _dice(tp, fp, fn),
        "ndsc": _ndsc(tp, fp, fn, pred.size, NDSC_REFERENCE_LOAD),
        "sensitivity": tp / (tp + fn) if tp + fn else math.nan,
        "precision": tp / (tp + fp) if tp + fp else math.nan,
        "volume_pred_mm3": v_pred,
        "volume_ref_mm3": v_ref,
        "volume_difference_mm3": v_pred - v_ref,
        "avd_percent": avd,
    }


_CROSS = connectivity_structure(6)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a 6-neighbour outside the mask (voxels on the array border count)."""
    eroded = ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)
    return mask & ~eroded


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float], percentile: float = 95.0
) -> dict[str, float]:
    """Hausdorff distance, its percentile version and the average symmetric surface distance, in mm.

    The surface of a mask is its voxels with a 6-neighbour outside it. For every surface voxel of one
    mask, the distance (voxel centres, physical ``spacing_mm``) to the nearest surface voxel of the other
    is taken, in both directions. ``hd_mm`` is the largest of them; ``hd95_mm`` the larger of the two
    directed ``percentile``-th percentiles (numpy's linear interpolation), as MONAI and the DeepMind
    surface-distance package define the robust Hausdorff distance (counting voxels, not surface area);
    ``assd_mm`` the mean over both directions pooled: (sum d(P->R) + sum d(R->P)) / (|dP| + |dR|).

    Empty inputs: both empty -> 0.0 for all three; exactly one empty -> NaN (no distance exists).

    Examples:
        >>> p = np.zeros((4, 4, 4), bool); r = p.copy(); p[1, 1, 1] = r[1, 2, 1] = True
        >>> surface_distances(p, r, (1.0, 2.0, 3.0))["hd95_mm"]
        2.0
    """
    pred, ref = _pair(pred, ref)
    spacing = as_spacing(spacing_mm)
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile: expected a value in [0, 100], got {percentile}")
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return {"hd_mm": 0.0, "hd95_mm": 0.0, "assd_mm": 0.0}
    if not (has_pred and has_ref):
        return {"hd_mm": math.nan, "hd95_mm": math.nan, "assd_mm": math.nan}
    box = bounding_box(pred | ref)
    assert box is not None
    # Pad by one background voxel so that voxels on the box faces (not the image faces) erode correctly.
    pad_pred, pad_ref = (np.pad(m[box], 1) for m in (pred, ref))
    border_pred, border_ref = _surface(pad_pred), _surface(pad_ref)
    # Voxels at the image border were padded too, which counts the image border as outside, as intended.
    to_ref = ndimage.distance_transform_edt(~border_ref, sampling=spacing)[border_pred]
    to_pred = ndimage.distance_transform_edt(~border_pred, sampling=spacing)[border_ref]
    return {
        "hd_mm": float(max(to_ref.max(), to_pred.max())),
        "hd95_mm": float(max(np.percentile(to_ref, percentile), np.percentile(to_pred, percentile))),
        "assd_mm": float((to_ref.sum() + to_pred.sum()) / (to_ref.size + to_pred.size)),
    }
