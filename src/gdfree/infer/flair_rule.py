"""The simplest lesion finder there is, kept as the baseline every learned lesion segmenter must beat.

A voxel is lesion when its FLAIR lies more than ``k`` median absolute deviations above the brain's median
FLAIR, and lesions are its connected components (the lesion rule's connectivity) of at least ``min_mm3``
(10 mm3: ten voxels at 1 mm, as the rule was first written). One number, ``k``, is fitted on training cases
only (:func:`fit_flair_k`: the ``k`` of the best mean Dice over them), so the rule is scored on a held-out
case as fairly as a network is.

Examples:
    >>> flair = np.zeros((20, 20, 20), np.float32)
    >>> flair[2:18, 2:18, 2:18] = np.random.default_rng(0).normal(100, 5, (16, 16, 16))
    >>> flair[8:12, 8:12, 8:12] += 60
    >>> int(flair_rule(flair, flair != 0, 5.0, (1.0, 1.0, 1.0)).sum())
    64
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gdfree.arrays import label_components
from gdfree.metrics.voxel import dice

__all__ = ["FLAIR_KS", "fit_flair_k", "flair_rule"]

FLAIR_KS = tuple(float(k) for k in np.round(np.arange(1.0, 8.01, 0.25), 2))
"""The ``k`` values :func:`fit_flair_k` tries."""


def flair_rule(
    flair: np.ndarray, brain: np.ndarray, k: float, spacing_mm: Sequence[float], min_mm3: float = 10.0
) -> np.ndarray:
    """Lesion mask of ``flair`` (3-D) inside ``brain``: FLAIR > median + ``k`` x MAD over the brain (the median
    absolute deviation itself, not scaled to a standard deviation), components of >= ``min_mm3``.

    Raises:
        ValueError: shapes differ or the brain is empty.
    """
    brain = np.asarray(brain, bool)
    if flair.shape != brain.shape:
        raise ValueError(f"flair_rule: FLAIR {flair.shape} and brain {brain.shape} differ")
    if not brain.any():
        raise ValueError("flair_rule: the brain mask is empty")
    values = np.asarray(flair, np.float64)[brain]
    centre = float(np.median(values))
    mad = float(np.median(np.abs(values - centre)))
    bright = brain & (flair > centre + k * mad)
    labels, n = label_components(bright, spacing_mm)
    if n == 0:
        return bright
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * math.prod(spacing_mm)
    keep = sizes >= min_mm3 - 1e-9
    keep[0] = False
    return keep[labels]


def fit_flair_k(
    cases: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[float]]],
    ks: Sequence[float] = FLAIR_KS,
    min_mm3: float = 10.0,
) -> tuple[float, float]:
    """(k, mean Dice) of the ``k`` in ``ks`` whose :func:`flair_rule` masks have the best mean Dice over
    ``cases`` (FLAIR, brain, lesion mask, voxel size) - training cases only; ties go to the smaller ``k``.

    Raises:
        ValueError: no case.
    """
    if not cases:
        raise ValueError("fit_flair_k: no training case to fit k on")
    best_k, best = float(ks[0]), -1.0
    for k in ks:
        score = float(np.mean([dice(flair_rule(f, b, k, sp, min_mm3), les) for f, b, les, sp in cases]))
        if score > best:
            best_k, best = float(k), score
    return best_k, best
