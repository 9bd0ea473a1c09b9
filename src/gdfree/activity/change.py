"""New and enlarging lesions between a prior exam and its follow-up (on the follow-up grid, after
:func:`gdfree.preprocess.pair.pair_exams`).

Two things, both kept simple enough to be the baseline a learned change detector must beat:

- :func:`subtraction_lesions`: the registered FLAIR subtraction thresholded at ``k`` noise units, its connected
  components (the lesion rule's connectivity, more than ``min_volume_mm3``) inside a region where lesions
  appear (:func:`change_region`: the brain away from its edge, within the follow-up's white matter and lesions
  when given; :func:`hyperintense_region`: within the follow-up's FLAIR hyperintensities, what ``predict --prior``
  and the benchmark use); ``k`` is fitted on training pairs (:func:`fit_subtraction_k`).
- :func:`lesion_changes`: each follow-up lesion matched with the prior's lesions (both masks on the follow-up
  grid) and called ``new`` (less than ``new_overlap`` of it was lesion before), ``enlarging`` (its volume at
  least ``enlarge_ratio`` times the prior lesions it overlaps, and ``min_change_mm3`` more), ``shrinking``
  (the reverse) or ``stable``. The ratio 1.5 is a design choice (a clear increase, not a border wobble); MSSEG-2
  scored new lesions only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import LESION_CONNECTIVITY, label_components
from gdfree.metrics.lesions import DetectionRule, lesion_f1, match_lesions

__all__ = [
    "HYPER_K", "SUBTRACTION_K", "SUBTRACTION_KS", "change_region", "fit_subtraction_k", "hyperintense_region",
    "lesion_changes", "subtraction_lesions",
]  # fmt: skip

SUBTRACTION_KS = tuple(float(k) for k in np.arange(2.0, 12.01, 0.5))
"""The ``k`` values :func:`fit_subtraction_k` tries (noise units of the FLAIR difference)."""

SUBTRACTION_K = 6.5
"""The default ``k``: fitted on 30 training phantom pairs (halfway differences) by ``benchmarks/longitudinal.py``
(docs/longitudinal.md); on the real shared pairs it finds almost nothing, which that page also says."""


def change_region(
    brain: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    white_matter: np.ndarray | None = None,
    lesions: np.ndarray | None = None,
    edge_mm: float = 3.0,
) -> np.ndarray:
    """Where new lesions are looked for: the brain more than ``edge_mm`` from its border (registration and bias
    leave their largest differences at the brain's edge), within white matter and the follow-up's lesions (each
    dilated by a voxel) when either is given."""
    brain = np.asarray(brain, bool)
    deep = np.asarray(ndimage.distance_transform_edt(brain, sampling=spacing_mm) > edge_mm, bool)
    if white_matter is None and lesions is None:
        return deep
    region = np.zeros(brain.shape, bool)
    for part in (white_matter, lesions):
        if part is not None:
            region |= ndimage.binary_dilation(np.asarray(part, bool))
    return region & deep


HYPER_K = 3.0
"""FLAIR hyperintensity for :func:`hyperintense_region`: the FLAIR rule at 3 median absolute deviations."""


def hyperintense_region(flair: np.ndarray, brain: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """:func:`change_region` within the follow-up's FLAIR hyperintensities (:func:`flair_rule` at :data:`HYPER_K`,
    components over 3 mm3): a new lesion is a FLAIR hyperintensity at follow-up."""
    from gdfree.infer.flair_rule import flair_rule

    return change_region(brain, spacing_mm, lesions=flair_rule(flair, brain, HYPER_K, spacing_mm, min_mm3=3.0))


def subtraction_lesions(
    difference: np.ndarray, region: np.ndarray, k: float, spacing_mm: Sequence[float], min_volume_mm3: float = 3.0
) -> tuple[np.ndarray, int]:
    """Components (labels 1..n, n) of ``difference`` > ``k`` inside ``region`` (more than ``min_volume_mm3``)."""
    return label_components(
        (np.asarray(difference) > k) & np.asarray(region, bool), spacing_mm, LESION_CONNECTIVITY, min_volume_mm3
    )


def fit_subtraction_k(
    pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[float]]],
    ks: Sequence[float] = SUBTRACTION_KS,
    rule: DetectionRule | None = None,
) -> tuple[float, dict[float, float]]:
    """The ``k`` of the best pooled new-lesion F1 over training ``pairs`` of (difference, region, new-lesion
    truth, spacing); returns (k, {k: F1}). Ties go to the larger ``k`` (fewer false detections)."""
    rule = rule or DetectionRule()
    scores: dict[float, float] = {}
    for k in ks:
        counts = np.zeros(4, int)
        for difference, region, truth, spacing in pairs:
            labels, _ = subtraction_lesions(difference, region, k, spacing)
            m = match_lesions(labels > 0, truth, spacing, rule)
            counts += (m.n_ref, m.n_pred, m.tp_ref, m.tp_pred)
        f1 = lesion_f1(rule.name, *(int(c) for c in counts))
        scores[float(k)] = 0.0 if math.isnan(f1) else f1
    best = max(scores, key=lambda k: (scores[k], k))
    return best, scores


def lesion_changes(
    followup: np.ndarray,
    prior: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    new_overlap: float = 0.1,
    enlarge_ratio: float = 1.5,
    min_change_mm3: float = 10.0,
    min_volume_mm3: float = 3.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Each follow-up lesion's status against the prior's lesion mask (both on the follow-up grid).

    Returns:
        (labels, rows): the follow-up lesions' labels (1..n) and per lesion ``id``, ``status``, ``volume_mm3``,
        ``prior_volume_mm3`` (the prior lesions it overlaps, whole) and ``volume_change_mm3``.
    """
    voxel = float(np.prod(spacing_mm))
    labels, _ = label_components(followup, spacing_mm, LESION_CONNECTIVITY, min_volume_mm3)
    before, _ = label_components(prior, spacing_mm, LESION_CONNECTIVITY)
    sizes_before = np.bincount(before.ravel())
    rows = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        inside = labels[box] == i
        volume = float(inside.sum()) * voxel
        touched = np.unique(before[box][inside])
        touched = touched[touched > 0]
        overlap = float((before[box][inside] > 0).sum()) * voxel
        prior_volume = float(sizes_before[touched].sum()) * voxel if touched.size else 0.0
        change = volume - prior_volume
        if overlap < new_overlap * volume:
            status = "new"
        elif volume >= enlarge_ratio * prior_volume and change >= min_change_mm3:
            status = "enlarging"
        elif prior_volume >= enlarge_ratio * volume and -change >= min_change_mm3:
            status = "shrinking"
        else:
            status = "stable"
        rows.append({"id": i, "status": status, "volume_mm3": round(volume, 2),
                     "prior_volume_mm3": round(prior_volume, 2), "volume_change_mm3": round(change, 2)})  # fmt: skip
    return labels, rows
