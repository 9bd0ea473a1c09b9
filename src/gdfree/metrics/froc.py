"""Free-response ROC: lesion sensitivity against false-positive lesions per scan, over probability thresholds.

At each threshold t the probability map is binarised (p >= t), its components are formed and matched
against the reference lesions by a :class:`~gdfree.metrics.lesions.DetectionRule`, exactly as for a
single mask. Counts are kept per scan (:class:`FrocCounts`) so a cohort curve is their sum: sensitivity
= detected / reference lesions over all scans, false positives per scan = predicted lesions that are not
true positives / number of scans.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from gdfree.arrays import as_mask, as_spacing, bounding_box, same_shape
from gdfree.metrics.lesions import DetectionRule, _label, _match_labels

__all__ = ["DEFAULT_THRESHOLDS", "Froc", "FrocCounts", "froc", "froc_counts", "sensitivity_at_fp"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (
    0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85,
    0.9, 0.95, 0.98, 0.99,
)  # fmt: skip


@dataclass(frozen=True)
class FrocCounts:
    """Lesion counts of one scan at each threshold, shape (n_thresholds,) each: reference lesions detected,
    predicted lesions, and predicted lesions that are false positives."""

    thresholds: np.ndarray
    n_ref: int
    detected: np.ndarray
    predicted: np.ndarray
    false_positives: np.ndarray


@dataclass(frozen=True)
class Froc:
    """A cohort FROC curve, one point per threshold (ascending thresholds, so falling FP/scan)."""

    thresholds: np.ndarray
    sensitivity: np.ndarray
    fp_per_scan: np.ndarray
    n_scans: int
    n_ref_lesions: int


def froc_counts(
    prob: np.ndarray,
    ref: np.ndarray,
    spacing_mm: Sequence[float],
    rule: DetectionRule | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_pred_mm3: float = 0.0,
) -> FrocCounts:
    """Detected reference lesions and false-positive lesions of one scan at every threshold.

    ``min_pred_mm3``: predicted components of this volume or less are removed before matching (what
    prediction does with a model's ``min_lesion_mm3``); the reference keeps the rule's minimum.

    Raises:
        ValueError: thresholds outside (0, 1], probabilities outside [0, 1], shapes that differ, a
            negative ``min_pred_mm3``.
    """
    rule = rule or DetectionRule()
    if not (math.isfinite(min_pred_mm3) and min_pred_mm3 >= 0):
        raise ValueError(f"min_pred_mm3: expected a volume >= 0, got {min_pred_mm3}")
    pred_rule = replace(rule, min_volume_mm3=max(rule.min_volume_mm3, min_pred_mm3))
    prob = np.asarray(prob)
    ref = as_mask(ref, "ref")
    same_shape(("prob", prob), ("ref", ref))
    levels = np.asarray(sorted(float(t) for t in thresholds))
    if levels.size == 0 or levels[0] <= 0 or levels[-1] > 1:
        raise ValueError(f"thresholds: expected values in (0, 1], got {list(thresholds)}")
    if prob.size and (np.isnan(prob).any() or prob.min() < 0 or prob.max() > 1):
        raise ValueError("prob: expected probabilities in [0, 1] without NaN")
    spacing = as_spacing(spacing_mm)
    voxel_mm3 = math.prod(spacing)
    candidates = prob >= levels[0]
    box = bounding_box(candidates | ref)
    detected = np.zeros(levels.size, np.int64)
    predicted = np.zeros(levels.size, np.int64)
    false_pos = np.zeros(levels.size, np.int64)
    if box is None:
        return FrocCounts(levels, 0, detected, predicted, false_pos)
    crop = prob[box]
    ref_labels, n_ref = _label(ref[box], rule, spacing)
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)
    for i, level in enumerate(levels):
        # Label the predicted components in their own (shrinking) box; reference sizes come from above.
        above = crop >= level
        sub = bounding_box(above)
        if sub is None:
            continue
        pred_labels, n_pred = _label(above[sub], pred_rule, spacing)
        match = _match_labels(
            ref_labels[sub], n_ref, pred_labels, n_pred, voxel_mm3, rule, ref_sizes=ref_sizes, centroids=False
        )
        detected[i], predicted[i], false_pos[i] = match.tp_ref, match.n_pred, match.fp
    return FrocCounts(levels, n_ref, detected, predicted, false_pos)


def froc(scans: Iterable[FrocCounts]) -> Froc:
    """Pool per-scan counts (all computed at the same thresholds) into a cohort curve.

    No scan -> ValueError. No reference lesion in any scan -> sensitivity NaN at every threshold.
    """
    scans = list(scans)
    if not scans:
        raise ValueError("scans: expected at least one scan's FROC counts")
    thresholds = scans[0].thresholds
    if any(not np.array_equal(s.thresholds, thresholds) for s in scans):
        raise ValueError("scans: FROC counts were computed at different thresholds")
    n_ref = sum(s.n_ref for s in scans)
    detected = np.sum([s.detected for s in scans], axis=0)
    false_pos = np.sum([s.false_positives for s in scans], axis=0)
    sensitivity = detected / n_ref if n_ref else np.full(thresholds.size, math.nan)
    return Froc(thresholds, sensitivity, false_pos / len(scans), len(scans), n_ref)


def sensitivity_at_fp(curve: Froc, fp_per_scan: Sequence[float] = (0.5, 1.0, 2.0)) -> dict[float, float]:
    """The highest sensitivity the curve reaches with at most ``x`` false positives per scan, for each x.

    No interpolation between thresholds: a point is either reached or not. NaN if no threshold gets the
    false positives that low (or no reference lesion exists).
    """
    result = {}
    for x in fp_per_scan:
        ok = curve.fp_per_scan <= x
        result[float(x)] = float(np.nanmax(curve.sensitivity[ok])) if ok.any() and curve.n_ref_lesions else math.nan
    return result
