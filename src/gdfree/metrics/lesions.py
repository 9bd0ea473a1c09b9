"""Lesion-wise detection: connected components of a predicted and a reference mask, matched by a rule.

Papers on MS lesions count detections by different rules and get different numbers from the same masks,
so the rule is a parameter (:class:`DetectionRule`) and every result records it. Three rules:

``msseg``
    The rule of ``animaSegPerfAnalyzer`` used by the MSSEG-2016 challenge (Commowick et al., Sci Rep
    2018). Components are 6-connected and those of volume <= 3 mm3 are removed from both masks. A
    reference lesion is detected when (1) the predicted components overlapping it cover more than
    ``alpha`` = 10% of it, and (2) taking those components in decreasing order of overlap until they
    account for ``gamma`` = 65% of the covered part, none lies more than ``beta`` = 70% outside every
    reference lesion (a component spilling over the whole brain detects nothing). A predicted component
    is a true positive by the same test with the roles swapped. Lesion sensitivity = detected reference
    lesions / reference lesions, precision = true-positive components / predicted components,
    F1 = their harmonic mean. (anima stops the loop of (2) after as many components as the tested mask
    has labels; the rule is implemented as the paper states it, without that bound.)
``iou``
    Shifts 2022: a predicted component is a true positive if its largest IoU with an overlapping
    reference component is >= ``iou_threshold`` (0.25); a reference component is missed if its largest
    IoU with a predicted one is below it. F1 = TP / (TP + (FP + FN) / 2), TP counted on predictions.
``any``
    Any overlap of one voxel detects a reference lesion and makes a predicted component a true positive.
    F1 as for ``iou``.

**One connectivity rule everywhere:** a lesion is a 6-connected component (voxels sharing a face),
:data:`LESION_CONNECTIVITY`, as anima counts them. Predicted lesions, lesion tables, derived enhancing
labels, lesion sampling and every metric use it; a caller may choose 18 or 26 for a rule explicitly
(``--connectivity``), and the result records it. Volumes are in mm3
(voxel count x voxel volume); a component is kept when its voxel count is at least
floor(min_volume_mm3 / voxel_mm3) + 1, i.e. strictly above the minimum, as anima counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gdfree.arrays import (
    LESION_CONNECTIVITY,
    as_mask,
    as_spacing,
    bounding_box,
    connectivity_structure,
    label_components,
    min_voxels,
    same_shape,
)

__all__ = [
    "LESION_CONNECTIVITY",
    "RULES",
    "VOLUME_BINS",
    "DetectionRule",
    "LesionMatch",
    "bootstrap_pooled_f1",
    "label_lesions",
    "lesion_f1",
    "match_lesions",
]

RULES = ("msseg", "iou", "any")
VOLUME_BINS: tuple[tuple[str, float, float], ...] = (
    ("<=10", 0.0, 10.0),
    ("10-50", 10.0, 50.0),
    ("50-200", 50.0, 200.0),
    (">200", 200.0, math.inf),
)
"""Lesion volume bins in mm3, (name, low, high]: a lesion of exactly 10 mm3 falls in ``<=10``."""

@dataclass(frozen=True)
class DetectionRule:
    """How lesions are formed and matched; see the module docstring for each rule.

    Attributes:
        name: ``msseg``, ``iou`` or ``any``.
        connectivity: 6, 18 or 26 neighbours.
        min_volume_mm3: components of this volume or less are removed from both masks.
        alpha, beta, gamma: the three fractions of the ``msseg`` rule.
        iou_threshold: the ``iou`` rule's threshold.
    """

    name: str = "msseg"
    connectivity: int = LESION_CONNECTIVITY
    min_volume_mm3: float = 3.0
    alpha: float = 0.10
    beta: float = 0.70
    gamma: float = 0.65
    iou_threshold: float = 0.25

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"rule: expected one of {', '.join(RULES)}, got {self.name!r}")
        connectivity_structure(self.connectivity)  # raises for another connectivity
        if not (math.isfinite(self.min_volume_mm3) and self.min_volume_mm3 >= 0):
            raise ValueError(f"min_volume_mm3: expected a volume >= 0, got {self.min_volume_mm3}")
        for key in ("alpha", "beta", "gamma", "iou_threshold"):
            value = getattr(self, key)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{key}: expected a fraction in (0, 1], got {value}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DetectionRule:
        """The rule as its originators run it: ``msseg`` removes lesions <= 3 mm3, ``iou``/``any`` none."""
        defaults: dict[str, Any] = {"name": name, "min_volume_mm3": 3.0 if name == "msseg" else 0.0}
        return replace(cls(**defaults), **overrides) if overrides else cls(**defaults)

    def min_voxels(self, voxel_mm3: float) -> int:
        """Smallest voxel count of a kept component."""
        return min_voxels(self.min_volume_mm3, voxel_mm3)


label_lesions = label_components
"""Lesions of a mask: :func:`gdfree.arrays.label_components` (the one connectivity rule, the minimum volume)."""


def _label(mask: np.ndarray, rule: DetectionRule, spacing_mm: Sequence[float]) -> tuple[np.ndarray, int]:
    return label_components(mask, spacing_mm, rule.connectivity, rule.min_volume_mm3)


@dataclass(frozen=True)
class LesionMatch:
    """The outcome of matching one case's lesions.

    Attributes:
        rule: the rule used.
        ref_volume_mm3, pred_volume_mm3: per-lesion volumes, shape (n_ref,), (n_pred,).
        ref_centroid_vox, pred_centroid_vox: per-lesion centroids in voxel indices, shape (n, 3).
        ref_detected: (n_ref,) bool, the reference lesion is detected.
        pred_true: (n_pred,) bool, the predicted lesion is a true positive.
    """

    rule: DetectionRule
    ref_volume_mm3: np.ndarray
    pred_volume_mm3: np.ndarray
    ref_centroid_vox: np.ndarray
    pred_centroid_vox: np.ndarray
    ref_detected: np.ndarray
    pred_true: np.ndarray

    @property
    def n_ref(self) -> int:
        return int(self.ref_detected.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_true.size)

    @property
    def tp_ref(self) -> int:
        """Reference lesions detected."""
        return int(self.ref_detected.sum())

    @property
    def tp_pred(self) -> int:
        """Predicted lesions that are true positives."""
        return int(self.pred_true.sum())

    @property
    def fn(self) -> int:
        return self.n_ref - self.tp_ref

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp_pred

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """(n_ref, n_pred, tp_ref, tp_pred): what pooled lesion metrics sum over cases."""
        return self.n_ref, self.n_pred, self.tp_ref, self.tp_pred

    @property
    def sensitivity(self) -> float:
        """Detected / reference lesions; NaN without reference lesions."""
        return self.tp_ref / self.n_ref if self.n_ref else math.nan

    @property
    def precision(self) -> float:
        """True-positive / predicted lesions; NaN without predicted lesions."""
        return self.tp_pred / self.n_pred if self.n_pred else math.nan

    @property
    def f1(self) -> float:
        """Lesion F1 of the rule (:func:`lesion_f1`)."""
        return lesion_f1(self.rule.name, self.n_ref, self.n_pred, self.tp_ref, self.tp_pred)

    def summary(self) -> dict[str, float | int]:
        """Counts and rates as one flat row."""
        return {
            "n_ref_lesions": self.n_ref,
            "n_pred_lesions": self.n_pred,
            "lesion_tp_ref": self.tp_ref,
            "lesion_tp_pred": self.tp_pred,
            "lesion_fn": self.fn,
            "lesion_fp": self.fp,
            "lesion_sensitivity": self.sensitivity,
            "lesion_precision": self.precision,
            "lesion_f1": self.f1,
        }

    def by_volume(self) -> list[dict[str, Any]]:
        """Per volume bin (:data:`VOLUME_BINS`): reference lesions and detections, predictions and FPs.

        A reference lesion is binned by its own volume, a predicted one by its own volume.
        """
        rows = []
        for name, low, high in VOLUME_BINS:
            in_ref = (self.ref_volume_mm3 > low) & (self.ref_volume_mm3 <= high)
            in_pred = (self.pred_volume_mm3 > low) & (self.pred_volume_mm3 <= high)
            n_ref, n_pred = int(in_ref.sum()), int(in_pred.sum())
            detected, true = int(self.ref_detected[in_ref].sum()), int(self.pred_true[in_pred].sum())
            rows.append({
                "volume_bin": name,
                "n_ref_lesions": n_ref,
                "lesion_tp_ref": detected,
                "n_pred_lesions": n_pred,
                "lesion_fp": n_pred - true,
                "lesion_sensitivity": detected / n_ref if n_ref else math.nan,
                "lesion_precision": true / n_pred if n_pred else math.nan,
            })  # fmt: skip
        return rows


def lesion_f1(rule: str, n_ref: int, n_pred: int, tp_ref: int, tp_pred: int) -> float:
    """Lesion F1 from counts: ``msseg`` the harmonic mean of lesion sensitivity (tp_ref / n_ref) and
    precision (tp_pred / n_pred), as anima; ``iou``/``any`` TP / (TP + (FP + FN) / 2) with TP = tp_pred,
    as Shifts. No lesion in either mask -> 1.0; lesions in only one -> 0.0.
    """
    if n_ref == 0 and n_pred == 0:
        return 1.0
    if n_ref == 0 or n_pred == 0:
        return 0.0
    if rule == "msseg":
        p, s = tp_pred / n_pred, tp_ref / n_ref
        return 0.0 if p + s == 0 else 2.0 * p * s / (p + s)
    return tp_pred / (tp_pred + 0.5 * ((n_pred - tp_pred) + (n_ref - tp_ref)))


def bootstrap_pooled_f1(
    counts: Sequence[np.ndarray | Sequence[Sequence[int]]], rule: str, *, n_boot: int = 2000, seed: int = 0
) -> np.ndarray:
    """Pooled lesion F1 (:func:`lesion_f1` of the summed counts) over patient bootstrap resamples.

    Args:
        counts: per model, the (n, 4) per-patient counts ``(n_ref, n_pred, tp_ref, tp_pred)``
            (:attr:`LesionMatch.counts`), every model's rows for the same n patients in the same order.
        rule: the detection rule's name (how F1 is formed from the counts).

    Every model is scored on the same resamples (``rng.integers(0, n, (n_boot, n))`` with
    ``default_rng(seed)``), so a difference or ratio of two models' columns has a paired CI.

    Returns:
        (n_boot, M) float array.

    Raises:
        ValueError: no model, shapes that are not (n, 4) with one n > 0, negative counts or hits above totals.
    """
    arrays = [np.asarray(c, dtype=np.int64) for c in counts]
    if not arrays or any(a.ndim != 2 or a.shape[1] != 4 or a.shape[0] != arrays[0].shape[0] for a in arrays):
        raise ValueError("counts: expected one (n, 4) array of (n_ref, n_pred, tp_ref, tp_pred) per model, same n")
    n = arrays[0].shape[0]
    if n == 0 or n_boot < 1:
        raise ValueError(f"counts: need n > 0 patients and n_boot >= 1, got {n} and {n_boot}")
    for a in arrays:
        if (a < 0).any() or (a[:, 2] > a[:, 0]).any() or (a[:, 3] > a[:, 1]).any():
            raise ValueError("counts: expected 0 <= tp_ref <= n_ref and 0 <= tp_pred <= n_pred")
    idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
    out = np.empty((n_boot, len(arrays)))
    for m, a in enumerate(arrays):
        sums = a[idx].sum(axis=1)  # (n_boot, 4): the pooled counts of each resample
        out[:, m] = [lesion_f1(rule, *(int(v) for v in row)) for row in sums]
    return out


def match_lesions(
    pred: np.ndarray, ref: np.ndarray, spacing_mm: Sequence[float], rule: DetectionRule | None = None
) -> LesionMatch:
    """Label both masks and match their lesions by ``rule`` (default: ``msseg``).

    Empty inputs: no reference lesion -> sensitivity NaN, every predicted lesion a false positive;
    no predicted lesion -> precision NaN, every reference lesion missed; F1 as in :attr:`LesionMatch.f1`.
    """
    rule = rule or DetectionRule()
    pred, ref = as_mask(pred, "pred"), as_mask(ref, "ref")
    same_shape(("pred", pred), ("ref", ref))
    spacing = as_spacing(spacing_mm)
    voxel_mm3 = math.prod(spacing)
    box = bounding_box(pred | ref)
    if box is None:
        return _match_labels(np.zeros((1, 1, 1), np.int32), 0, np.zeros((1, 1, 1), np.int32), 0, voxel_mm3, rule)
    offset = np.array([s.start for s in box], float)
    ref_labels, n_ref = _label(ref[box], rule, spacing)
    pred_labels, n_pred = _label(pred[box], rule, spacing)
    return _match_labels(ref_labels, n_ref, pred_labels, n_pred, voxel_mm3, rule, offset)


def _centroids(labels: np.ndarray, n: int, sizes: np.ndarray, offset: np.ndarray) -> np.ndarray:
    if n == 0:
        return np.zeros((0, 3))
    flat = labels.ravel()
    coords = np.unravel_index(np.flatnonzero(flat), labels.shape)
    ids = flat[flat > 0]
    sums = np.stack([np.bincount(ids, weights=c, minlength=n + 1)[1:] for c in coords], axis=1)
    return sums / sizes[1:, None] + offset


def _match_labels(
    ref_labels: np.ndarray,
    n_ref: int,
    pred_labels: np.ndarray,
    n_pred: int,
    voxel_mm3: float,
    rule: DetectionRule,
    offset: np.ndarray | None = None,
    ref_sizes: np.ndarray | None = None,
    centroids: bool = True,
) -> LesionMatch:
    """Match labelled components (same grid): the core shared by :func:`match_lesions` and the FROC.

    ``ref_labels`` may be a crop that holds every predicted component but not all of each reference
    lesion; then pass the reference lesions' full voxel counts as ``ref_sizes`` (index 0 unused) and
    ``centroids=False``.
    """
    offset = np.zeros(3) if offset is None else offset
    ref_flat, pred_flat = ref_labels.ravel(), pred_labels.ravel()
    if ref_sizes is None:
        ref_sizes = np.bincount(ref_flat, minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_flat, minlength=n_pred + 1)
    both = (ref_flat > 0) & (pred_flat > 0)
    # Sparse overlap table: one entry per (reference, predicted) pair that shares voxels.
    key = ref_flat[both].astype(np.int64) * (n_pred + 1) + pred_flat[both]
    pairs, overlap = np.unique(key, return_counts=True)
    pair_ref, pair_pred = (pairs // (n_pred + 1)).astype(np.intp), (pairs % (n_pred + 1)).astype(np.intp)
    if rule.name == "any":
        ref_detected = np.zeros(n_ref + 1, bool)
        pred_true = np.zeros(n_pred + 1, bool)
        ref_detected[pair_ref] = True
        pred_true[pair_pred] = True
    elif rule.name == "iou":
        iou = overlap / (ref_sizes[pair_ref] + pred_sizes[pair_pred] - overlap)
        best_ref, best_pred = np.zeros(n_ref + 1), np.zeros(n_pred + 1)
        np.maximum.at(best_ref, pair_ref, iou)
        np.maximum.at(best_pred, pair_pred, iou)
        ref_detected, pred_true = best_ref >= rule.iou_threshold, best_pred >= rule.iou_threshold
    else:
        ref_detected = _msseg(pair_ref, pair_pred, overlap, ref_sizes, pred_sizes, rule)
        pred_true = _msseg(pair_pred, pair_ref, overlap, pred_sizes, ref_sizes, rule)
    return LesionMatch(
        rule=rule,
        ref_volume_mm3=ref_sizes[1:] * voxel_mm3,
        pred_volume_mm3=pred_sizes[1:] * voxel_mm3,
        ref_centroid_vox=_centroids(ref_labels, n_ref, ref_sizes, offset) if centroids else np.zeros((0, 3)),
        pred_centroid_vox=_centroids(pred_labels, n_pred, pred_sizes, offset) if centroids else np.zeros((0, 3)),
        ref_detected=ref_detected[1:],
        pred_true=pred_true[1:],
    )


def _msseg(
    rows: np.ndarray,
    cols: np.ndarray,
    overlap: np.ndarray,
    row_sizes: np.ndarray,
    col_sizes: np.ndarray,
    rule: DetectionRule,
) -> np.ndarray:
    """The anima test for every row lesion against the column components (module docstring).

    Args:
        rows, cols, overlap: the sparse overlap table (one entry per pair sharing voxels).
        row_sizes, col_sizes: voxel counts per label, index 0 = background.

    Returns:
        (n_rows + 1,) bool, entry 0 unused.
    """
    detected = np.zeros(row_sizes.size, bool)
    covered = np.bincount(rows, weights=overlap, minlength=row_sizes.size)
    # Fraction of each column component outside every row lesion.
    outside = 1.0 - np.bincount(cols, weights=overlap, minlength=col_sizes.size) / np.maximum(col_sizes, 1)
    order = np.lexsort((-overlap, rows))  # grouped by row, largest overlap first
    rows, cols, overlap = rows[order], cols[order], overlap[order]
    starts = np.searchsorted(rows, np.arange(row_sizes.size))
    ends = np.searchsorted(rows, np.arange(row_sizes.size), side="right")
    for lesion in np.flatnonzero(covered > rule.alpha * row_sizes):
        if lesion == 0:
            continue
        weight = 0.0
        ok = True
        for k in range(starts[lesion], ends[lesion]):
            if weight >= rule.gamma:
                break
            if outside[cols[k]] > rule.beta:
                ok = False
                break
            weight += overlap[k] / covered[lesion]
        detected[lesion] = ok
    return detected
