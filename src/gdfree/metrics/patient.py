"""Patient level: does this exam show active lesions? Scores, ROC AUC, sensitivity/specificity, bootstrap CIs.

The reference label of an exam is 1 when its reference mask holds at least one lesion under the detection
rule (so lesions removed by the rule's minimum volume do not make a patient active). The score of an exam
is one of :data:`PATIENT_SCORES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PATIENT_SCORES",
    "PROBABILITY_SCORES",
    "PatientMetrics",
    "bootstrap_ci",
    "calibrated_lesions",
    "fit_lesion_calibration",
    "lesion_maxima",
    "patient_metrics",
    "percentile_ci",
    "probability_score",
    "roc_auc",
    "roc_curve_rows",
    "top_lesion_median",
]

PATIENT_SCORES = ("max_prob", "max_lesion_prob", "top_lesion_median", "top_lesion_calibrated", "count", "volume")
"""``max_prob``: the highest voxel probability (inside the brain mask when there is one);
``max_lesion_prob``: the highest voxel probability inside a predicted lesion (a component of the predicted
mask kept by the rule), 0 without one, so isolated voxels below the rule's minimum volume do not count;
``top_lesion_median``: the highest median voxel probability of a predicted lesion (:func:`top_lesion_median`),
0 without one; ``top_lesion_calibrated``: the highest lesion-level calibrated probability of a predicted lesion
(:func:`fit_lesion_calibration`), 0 without one; ``count``: the number of predicted lesions; ``volume``: their
total volume in mm3.

The maximum voxel probability saturates: a network sure of a few voxels somewhere scores nearly every exam
at 0.999, and a patient threshold chosen on it means nothing (docs/faults.md, issue 33). A lesion's median
does not ride on its single most confident voxel; a lesion-level calibration reads the lesion's maximum on the
logit scale, where 0.999 and 0.999999 are far apart, as the probability that the lesion is a true one."""


PROBABILITY_SCORES = PATIENT_SCORES[:4]
"""The patient scores read from a probability map (a model's ``patient_score`` is one of them)."""


def probability_score(
    name: str, prob: np.ndarray, labels: np.ndarray, calibration: Sequence[float] | None = None
) -> float:  # fmt: skip
    """Patient score ``name`` (one of :data:`PROBABILITY_SCORES`) of probability map ``prob`` whose predicted
    lesions are ``labels`` (1..n, 0 background; the caller restricts ``prob`` to the brain); ``calibration``:
    the (slope, intercept) of ``top_lesion_calibrated`` (:func:`fit_lesion_calibration`)."""
    if name == "max_prob":
        return float(prob.max(initial=0.0))
    if name == "max_lesion_prob":
        return float(prob[labels > 0].max(initial=0.0))
    if name == "top_lesion_median":
        return top_lesion_median(prob, labels)
    if name == "top_lesion_calibrated":
        if calibration is None:
            raise ValueError("patient score top_lesion_calibrated needs a lesion calibration (a model's)")
        return float(calibrated_lesions(lesion_maxima(prob, labels), calibration).max(initial=0.0))
    raise ValueError(f"patient score: expected one of {', '.join(PROBABILITY_SCORES)}, got {name!r}")


def lesion_maxima(prob: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) the highest probability inside each lesion of ``labels`` (1..n)."""
    from scipy import ndimage

    n = int(labels.max(initial=0))
    return np.asarray(ndimage.maximum(prob, labels, np.arange(1, n + 1)), float).reshape(n)


def calibrated_lesions(maxima: np.ndarray, calibration: Sequence[float]) -> np.ndarray:
    """Lesion-level probabilities sigmoid(slope x logit(maximum) + intercept) of lesion ``maxima``."""
    slope, intercept = calibration
    p = np.clip(np.asarray(maxima, float), 1e-12, 1 - 1e-12)
    return np.asarray(1.0 / (1.0 + np.exp(-(slope * np.log(p / (1 - p)) + intercept))))


def fit_lesion_calibration(
    maxima: Sequence[float] | np.ndarray, true: Sequence[bool] | np.ndarray
) -> tuple[float, float] | None:  # fmt: skip
    """(slope, intercept) of a logistic regression (scikit-learn, L2, C = 1) of "the predicted lesion is a true
    positive" on the logit of its maximum probability (Platt scaling at lesion level); None unless both true
    and false lesions are present."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(true, bool)
    if y.all() or not y.any():
        return None
    p = np.clip(np.asarray(maxima, float), 1e-12, 1 - 1e-12)
    fit = LogisticRegression().fit(np.log(p / (1 - p))[:, None], y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def top_lesion_median(prob: np.ndarray, labels: np.ndarray) -> float:
    """The highest median of ``prob`` over a lesion of ``labels`` (1..n, 0 background); 0.0 without a lesion."""
    from scipy import ndimage

    n = int(labels.max(initial=0))
    if n == 0:
        return 0.0
    return float(np.max(ndimage.median(prob, labels, np.arange(1, n + 1))))


def _check(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    if y.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels and scores: expected two 1-D arrays of one length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: expected 0 (no active lesion) or 1 (active)")
    if np.isnan(s).any():
        raise ValueError("scores: NaN is not a score")
    return y.astype(bool), s


def _auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC of every row of (B, n) labels and scores, as the Mann-Whitney U / (n_pos n_neg) with mid-ranks
    for ties (identical to scikit-learn's roc_auc_score); NaN for a row with one class."""
    from scipy.stats import rankdata

    ranks = rankdata(s, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    u = np.where(y, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def _sensitivity_rows(y: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    n_pos = y.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (y & (s >= threshold)).sum(axis=1) / n_pos, np.nan)


def _specificity_rows(y: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    n_neg = (~y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_neg > 0, (~y & (s < threshold)).sum(axis=1) / n_neg, np.nan)


def roc_auc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (ties count one half). NaN unless both classes are present."""
    y, s = _check(labels, scores)
    return float(_auc_rows(y[None], s[None])[0])


def roc_curve_rows(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> list[dict[str, float]]:
    """The ROC curve (scikit-learn's ``roc_curve``): one row per threshold with its FPR and TPR; empty
    unless both classes are present."""
    from sklearn.metrics import roc_curve

    y, s = _check(labels, scores)
    if y.all() or not y.any():
        return []
    fpr, tpr, thr = roc_curve(y, s)
    return [{"threshold": float(t), "fpr": float(f), "tpr": float(r)} for f, r, t in zip(fpr, tpr, thr, strict=True)]


def bootstrap_ci(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    rng: np.random.Generator,
    level: float = 0.95,
) -> tuple[float, float, int]:
    """Percentile bootstrap CI of a statistic, resampling patients with replacement.

    Args:
        statistic: maps (B, n) bool labels and (B, n) scores to (B,) values, one per resample row.
        n_boot: resamples, drawn as ``rng.integers(0, n, (n_boot, n))``.

    Resamples where the statistic is NaN (e.g. one class only, for the AUC) are dropped.

    Returns:
        (low, high, n_valid): NaN bounds if fewer than 2 resamples were valid.
    """
    y, s = _check(labels, scores)
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot >= 1 and 0 < level < 1 expected, got {n_boot} and {level}")
    idx = rng.integers(0, y.size, (n_boot, y.size))
    return percentile_ci(statistic(y[idx], s[idx]), level)


def percentile_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """(low, high, n_valid): the central ``level`` percentile interval of bootstrap ``values``, NaNs
    dropped; NaN bounds if fewer than 2 values are valid."""
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size < 2:
        return math.nan, math.nan, int(arr.size)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(arr, [tail, 100 - tail])
    return float(low), float(high), int(arr.size)


@dataclass(frozen=True)
class PatientMetrics:
    """Patient-level results with percentile-bootstrap 95% CIs (``*_ci`` = (low, high))."""

    n_active: int
    n_inactive: int
    threshold: float
    auc: float
    auc_ci: tuple[float, float]
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    n_boot: int
    seed: int

    def as_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def patient_metrics(
    labels: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> PatientMetrics:
    """AUC, and sensitivity/specificity of ``score >= threshold``, each with a bootstrap CI.

    Empty classes: no active patient -> AUC and sensitivity NaN; no inactive one -> AUC and specificity
    NaN. The bootstrap uses ``numpy.random.default_rng(seed)``, so the CIs are reproducible.
    """
    y, s = _check(labels, scores)
    rng = np.random.default_rng(seed)

    def ci(stat: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[float, float]:
        low, high, _ = bootstrap_ci(stat, y.astype(int), s, n_boot=n_boot, rng=rng)
        return low, high

    def sens(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _sensitivity_rows(a, b, threshold)

    def spec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _specificity_rows(a, b, threshold)

    return PatientMetrics(
        n_active=int(y.sum()),
        n_inactive=int((~y).sum()),
        threshold=float(threshold),
        auc=float(_auc_rows(y[None], s[None])[0]),
        auc_ci=ci(_auc_rows),
        sensitivity=float(sens(y[None], s[None])[0]),
        sensitivity_ci=ci(sens),
        specificity=float(spec(y[None], s[None])[0]),
        specificity_ci=ci(spec),
        n_boot=n_boot,
        seed=seed,
    )
