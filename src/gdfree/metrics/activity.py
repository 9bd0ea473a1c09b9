"""Lesion-level activity metrics: is each lesion correctly called active (enhancing) or not?

Per case, every lesion of a lesion mask gets a truth (it holds a voxel of the reference enhancing mask) and a
score ``p_active``. On the reference lesions (the components of the reference all-lesion mask) the score of
a lesion is the highest ``p_active`` of the scored lesions that overlap it (0 when none does: a lesion the
scorer never saw is called inactive); on the scored lesions themselves (e.g. predicted by the lesion head) it
is their own. Lesions are pooled over patients: AUC, and the F1 of calling lesions with score >= threshold
active; 95% CIs resample patients (with all their lesions) with replacement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gdfree.metrics.lesions import LESION_CONNECTIVITY, label_lesions
from gdfree.metrics.patient import percentile_ci, roc_auc

__all__ = ["LesionActivity", "lesion_activity_case", "lesion_activity_summary"]


@dataclass(frozen=True)
class LesionActivity:
    """One case's lesions: truth (n,) bool and score (n,) float."""

    case_id: str
    active: np.ndarray
    score: np.ndarray


def lesion_activity_case(
    case_id: str,
    ref_lesion: np.ndarray,
    ref_enhancing: np.ndarray,
    scored_ids: np.ndarray,
    p_active: Mapping[int, float],
    spacing_mm: Sequence[float],
) -> tuple[LesionActivity, LesionActivity]:
    """(reference lesions, scored lesions) of one case.

    Args:
        ref_lesion, ref_enhancing: reference all-lesion and enhancing masks.
        scored_ids: (X, Y, Z) int, the scored lesions' ids (0 background).
        p_active: id -> score of each scored lesion (an id without a score scores 0).
        spacing_mm: voxel size (the lesion rule's components).
    """
    ref_labels, n_ref = label_lesions(ref_lesion, spacing_mm, LESION_CONNECTIVITY)
    enh = np.asarray(ref_enhancing, bool)
    ids = np.arange(1, n_ref + 1)
    ref_active = np.asarray(ndimage.maximum(enh, ref_labels, ids), float).reshape(n_ref) > 0
    lookup = np.zeros(int(scored_ids.max(initial=0)) + 1, np.float64)
    for k, v in p_active.items():
        if 0 < int(k) < lookup.size:
            lookup[int(k)] = float(v)
    voxel_score = lookup[scored_ids]
    ref_score = np.asarray(ndimage.maximum(voxel_score, ref_labels, ids), float).reshape(n_ref)
    own_ids = np.unique(scored_ids[scored_ids > 0])
    own_active = np.asarray(ndimage.maximum(enh, scored_ids, own_ids), float).reshape(own_ids.size) > 0
    own_score = lookup[own_ids] if own_ids.size else np.zeros(0)
    return (LesionActivity(case_id, ref_active, np.nan_to_num(ref_score)),
            LesionActivity(case_id, own_active, own_score))  # fmt: skip


def _f1(active: np.ndarray, called: np.ndarray) -> float:
    denominator = int(called.sum()) + int(active.sum())
    return 2 * int((called & active).sum()) / denominator if denominator else math.nan


def lesion_activity_summary(
    cases: Sequence[LesionActivity], threshold: float, n_boot: int = 2000, seed: int = 0
) -> dict[str, float | int | list[float]]:
    """Pooled lesion-level AUC and F1 at ``threshold`` with patient-bootstrap 95% CIs (NaN where undefined)."""
    if not cases:
        return {"n_lesions": 0, "n_active": 0, "n_patients": 0, "auc": math.nan, "auc_ci": [math.nan, math.nan],
                "f1": math.nan, "f1_ci": [math.nan, math.nan]}  # fmt: skip
    y = np.concatenate([c.active for c in cases]).astype(bool)
    s = np.concatenate([c.score for c in cases]).astype(float)
    rng = np.random.default_rng(seed)
    aucs, f1s = [], []
    for _ in range(n_boot):
        pick = rng.integers(len(cases), size=len(cases))
        yb = np.concatenate([cases[i].active for i in pick]).astype(bool)
        sb = np.concatenate([cases[i].score for i in pick]).astype(float)
        aucs.append(roc_auc(yb, sb) if yb.size and yb.any() and not yb.all() else math.nan)
        f1s.append(_f1(yb, sb >= threshold))
    auc_lo, auc_hi, _ = percentile_ci(aucs)
    f1_lo, f1_hi, _ = percentile_ci(f1s)
    return {
        "n_lesions": int(y.size), "n_active": int(y.sum()), "n_patients": len(cases), "threshold": float(threshold),
        "auc": roc_auc(y, s) if y.size and y.any() and not y.all() else math.nan, "auc_ci": [auc_lo, auc_hi],
        "f1": _f1(y, s >= threshold), "f1_ci": [f1_lo, f1_hi],
    }  # fmt: skip
