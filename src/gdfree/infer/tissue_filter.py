"""Drop predicted lesions that white matter does not surround (issue 31).

MS lesions of the kind the reference masks hold lie in white matter: a true lesion's one-voxel shell is mostly
white matter (or ventricle, for a periventricular one), a false positive in bright cortex or at the brain's edge
mostly grey matter and CSF. Measured at 2 mm (docs/real_lesions.md): the consensus lesions' shells are 0.90-0.94
white matter (median) on the two real patients and 0.74-0.91 on six phantoms; the components of the FLAIR rule
(k 2.5) that touch no reference lesion, 0.0-0.33. White matter is the brightest class of a 3-class k-means of
the T1w inside the brain (:func:`gdfree.data.cases.white_matter`); the fraction that separates the two is fitted
on training cases only (:func:`fit_min_white_matter`), like the FLAIR rule's k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_WM_FRACTIONS", "drop_outside_white_matter", "fit_min_white_matter", "white_matter_shell"]

MIN_WM_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
"""The fractions :func:`fit_min_white_matter` tries; 0 keeps every component."""


def white_matter_shell(mask: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(component labels of ``mask`` (6-connected), the fraction of each component's one-voxel shell inside
    ``brain`` that is white matter ``wm`` (:func:`gdfree.data.cases.white_matter`); index i - 1 for label i). A
    component whose shell leaves the brain entirely gets 0.

    Raises:
        ValueError: the arrays' shapes differ.
    """
    from scipy import ndimage

    mask, brain = np.asarray(mask, bool), np.asarray(brain, bool)
    if not mask.shape == wm.shape == brain.shape:
        raise ValueError(f"white_matter_shell: mask {mask.shape}, white matter {wm.shape} and brain {brain.shape} "
                         "differ")  # fmt: skip
    labels, n = ndimage.label(mask)
    fractions = np.zeros(n)
    if n == 0:
        return labels, fractions
    cube = ndimage.generate_binary_structure(3, 3)
    for i, box in enumerate(ndimage.find_objects(labels)):
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        comp = labels[box] == i + 1
        shell = ndimage.binary_dilation(comp, cube) & ~comp & brain[box]
        fractions[i] = float(wm[box][shell].mean()) if shell.any() else 0.0
    return labels, fractions


def drop_outside_white_matter(mask: np.ndarray, wm: np.ndarray, brain: np.ndarray, min_fraction: float) -> np.ndarray:
    """``mask`` without the components whose shell is less than ``min_fraction`` white matter
    (:func:`white_matter_shell`); 0 returns it unchanged."""
    mask = np.asarray(mask, bool)
    if min_fraction <= 0 or not mask.any():
        return mask.copy()
    return _kept(*white_matter_shell(mask, wm, brain), min_fraction)


def fit_min_white_matter(
    cases: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    fractions: Sequence[float] = MIN_WM_FRACTIONS,
) -> tuple[float, float]:
    """(fraction, mean Dice) of the ``fractions`` value whose :func:`drop_outside_white_matter` masks have the best
    mean Dice over ``cases`` (predicted mask, white matter, brain, reference lesion mask) - training cases only;
    ties go to the smaller fraction (the one that drops less).

    Raises:
        ValueError: no case.
    """
    from gdfree.metrics.voxel import dice

    if not cases:
        raise ValueError("fit_min_white_matter: no training case to fit the fraction on")
    shells = [(white_matter_shell(pred, wm, brain), np.asarray(ref, bool)) for pred, wm, brain, ref in cases]
    best = (0.0, -1.0)
    for f in sorted(fractions):
        score = float(np.mean([dice(_kept(lab, fr, f), ref) for (lab, fr), ref in shells]))
        if score > best[1] + 1e-12:
            best = (float(f), score)
    return best


def _kept(labels: np.ndarray, fractions: np.ndarray, min_fraction: float) -> np.ndarray:
    """The voxels of the components (``labels``, 1-based) whose shell fraction is at least ``min_fraction``."""
    return np.concatenate([[False], fractions >= min_fraction])[labels]
