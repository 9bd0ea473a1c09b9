"""Calibration of voxel probabilities (reliability table, ECE) and retention curves for uncertainty.

A :class:`ReliabilityTable` holds sums, not means, so the tables of many scans add up to the cohort's.
Retention curves follow Shifts 2022 (Malinin et al.): voxels are sorted from most to least certain; at a
retained fraction f the most certain f of the predictions are kept and the rest replaced by the reference
(as if a human corrected them), and the normalised Dice is computed. A useful uncertainty makes the curve
climb fast; the reported error, R-AUC, is the area above it, 1 - AUC(nDSC), over the 200 log-spaced
fractions Shifts uses. Lower is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gdfree.arrays import same_shape
from gdfree.metrics.voxel import NDSC_REFERENCE_LOAD

__all__ = [
    "RETENTION_FRACTIONS",
    "ReliabilityTable",
    "expected_calibration_error",
    "reliability_table",
    "retention_auc",
    "retention_curve",
]

RETENTION_FRACTIONS = np.log(np.arange(1, 201)) / np.log(200)
"""Shifts' 200 retained fractions, log(1..200)/log(200): 0 to 1, denser near 1."""


@dataclass(frozen=True)
class ReliabilityTable:
    """Per probability bin: voxel count, sum of probabilities, count of reference-positive voxels.

    Bins are equal-width over [0, 1]; bin i holds i/n <= p < (i+1)/n, the last one includes p = 1.
    """

    edges: np.ndarray
    count: np.ndarray
    sum_prob: np.ndarray
    positives: np.ndarray

    def __add__(self, other: ReliabilityTable) -> ReliabilityTable:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("reliability tables with different bins cannot be added")
        return ReliabilityTable(
            self.edges, self.count + other.count, self.sum_prob + other.sum_prob, self.positives + other.positives
        )

    @property
    def ece(self) -> float:
        """Expected calibration error sum_b (n_b / N) |mean p_b - positive fraction_b|; NaN if no voxel."""
        total = self.count.sum()
        if total == 0:
            return math.nan
        used = self.count > 0
        gap = np.abs(self.sum_prob[used] - self.positives[used])  # = n_b |mean p_b - fraction_b|
        return float(gap.sum() / total)

    def ece_above(self, low: float) -> float:
        """ECE over the bins from probability ``low`` up only (the voxels the model calls at least that likely);
        NaN if none. Pooled over a whole brain, the near-zero bin of the background outweighs every other and
        hides an overconfident top bin: this one does not."""
        keep = self.edges[:-1] >= low - 1e-12
        total = self.count[keep].sum()
        if total == 0:
            return math.nan
        return float(np.abs(self.sum_prob[keep] - self.positives[keep]).sum() / total)

    def largest_gap(self, min_count: int = 20) -> dict[str, float | int] | None:
        """The bin (of at least ``min_count`` voxels) whose mean probability is furthest from its observed
        positive fraction: its row of :meth:`rows` plus ``gap`` (mean probability - fraction); None if none."""
        rows = [r for r in self.rows() if int(r["count"]) >= min_count]
        if not rows:
            return None
        worst = max(rows, key=lambda r: abs(float(r["mean_prob"]) - float(r["positive_fraction"])))
        return {**worst, "gap": float(worst["mean_prob"]) - float(worst["positive_fraction"])}

    def rows(self) -> list[dict[str, float | int]]:
        """One row per bin: bounds, count, mean probability, observed positive fraction (NaN if empty)."""
        out = []
        for i in range(self.count.size):
            n = int(self.count[i])
            out.append({
                "bin_low": float(self.edges[i]),
                "bin_high": float(self.edges[i + 1]),
                "count": n,
                "mean_prob": float(self.sum_prob[i] / n) if n else math.nan,
                "positive_fraction": float(self.positives[i] / n) if n else math.nan,
            })  # fmt: skip
        return out


def reliability_table(prob: np.ndarray, ref: np.ndarray, n_bins: int = 10) -> ReliabilityTable:
    """Bin voxel probabilities against the binary reference. Pass ``prob[brain]``, ``ref[brain]`` to
    restrict to a region (any shape is accepted; arrays are flattened).

    Raises:
        ValueError: shapes differ, probabilities outside [0, 1] or NaN, ``n_bins`` < 1.
    """
    prob, ref = np.asarray(prob, dtype=np.float64).ravel(), np.asarray(ref).ravel() != 0
    same_shape(("prob", prob), ("ref", ref))
    if n_bins < 1:
        raise ValueError(f"n_bins: expected at least 1, got {n_bins}")
    if prob.size and (np.isnan(prob).any() or prob.min() < 0 or prob.max() > 1):
        raise ValueError("prob: expected probabilities in [0, 1] without NaN")
    index = np.minimum((prob * n_bins).astype(np.int64), n_bins - 1)
    return ReliabilityTable(
        edges=np.linspace(0.0, 1.0, n_bins + 1),
        count=np.bincount(index, minlength=n_bins).astype(np.int64),
        sum_prob=np.bincount(index, weights=prob, minlength=n_bins),
        positives=np.bincount(index, weights=ref, minlength=n_bins),
    )


def expected_calibration_error(prob: np.ndarray, ref: np.ndarray, n_bins: int = 10) -> float:
    """ECE over equal-width bins (see :class:`ReliabilityTable`); NaN for no voxel."""
    return reliability_table(prob, ref, n_bins).ece


def retention_curve(
    pred: np.ndarray,
    ref: np.ndarray,
    uncertainty: np.ndarray,
    fractions: np.ndarray = RETENTION_FRACTIONS,
    reference_load: float = NDSC_REFERENCE_LOAD,
) -> np.ndarray:
    """nDSC at each retained fraction (Shifts 2022), shape (len(fractions),).

    Arrays are flattened; pass the brain voxels only (as Shifts does) to restrict N. Voxels are sorted by
    ascending uncertainty with a stable sort (ties keep voxel order; Shifts' unstable sort may order ties
    otherwise). At fraction f the first int(N f) voxels keep the prediction. Computed with cumulative sums,
    exactly the nDSC of each mixed mask. An empty reference and prediction give 1.0 everywhere.
    """
    pred = np.asarray(pred).ravel() != 0
    ref = np.asarray(ref).ravel() != 0
    unc = np.asarray(uncertainty, dtype=np.float64).ravel()
    same_shape(("pred", pred), ("ref", ref), ("uncertainty", unc))
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1 or fractions.min(initial=0) < 0 or fractions.max(initial=0) > 1:
        raise ValueError("fractions: expected a 1-D array of values in [0, 1]")
    if np.isnan(unc).any():
        raise ValueError("uncertainty: NaN is not an uncertainty")
    order = np.argsort(unc, kind="stable")
    p, g = pred[order], ref[order]
    zero = np.zeros(1, np.int64)
    cum_p = np.concatenate([zero, np.cumsum(p)])
    cum_g = np.concatenate([zero, np.cumsum(g)])
    cum_pg = np.concatenate([zero, np.cumsum(p & g)])
    n, n_ref = p.size, int(cum_g[-1])
    pos = (n * fractions).astype(np.int64)
    tp = cum_pg[pos] + (n_ref - cum_g[pos])
    fp = cum_p[pos] - cum_pg[pos]
    fn = cum_g[pos] - cum_pg[pos]
    k = 1.0 if n_ref == 0 else (1.0 - reference_load) * n_ref / (reference_load * (n - n_ref))
    denom = 2.0 * tp + k * fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom == 0, 1.0, 2.0 * tp / np.where(denom == 0, 1.0, denom))


def retention_auc(curve: np.ndarray, fractions: np.ndarray = RETENTION_FRACTIONS) -> float:
    """R-AUC: the area above an nDSC retention curve, 1 - trapezoid area under it (Shifts 2022)."""
    return float(1.0 - np.trapezoid(np.asarray(curve, float), np.asarray(fractions, float)))
