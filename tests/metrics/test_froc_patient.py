"""FROC curves and patient-level metrics with results written down."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdfree.metrics import DetectionRule, froc, froc_counts, patient_metrics, roc_auc, sensitivity_at_fp
from gdfree.metrics.patient import _auc_rows, bootstrap_ci

THRESHOLDS = (0.3, 0.5, 0.7, 0.95)
ANY = DetectionRule.preset("any")


def _scan() -> tuple[np.ndarray, np.ndarray]:
    """Two reference lesions scored 0.9 and 0.4, and a false-positive blob scored 0.6."""
    ref = np.zeros((16, 16, 16), bool)
    prob = np.zeros(ref.shape, np.float32)
    ref[2:4, 2:4, 2:4] = True
    prob[2:4, 2:4, 2:4] = 0.9
    ref[10:12, 2:4, 2:4] = True
    prob[10:12, 2:4, 2:4] = 0.4
    prob[10:12, 10:12, 10:12] = 0.6
    return prob, ref


def test_froc_of_one_scan():
    prob, ref = _scan()
    counts = froc_counts(prob, ref, (1, 1, 1), ANY, THRESHOLDS)
    assert counts.n_ref == 2
    assert counts.detected.tolist() == [2, 1, 1, 0]
    assert counts.false_positives.tolist() == [1, 1, 0, 0]
    curve = froc([counts])
    assert curve.sensitivity.tolist() == [1.0, 0.5, 0.5, 0.0]
    assert curve.fp_per_scan.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert sensitivity_at_fp(curve, (0.5, 1.0, 2.0)) == {0.5: 0.5, 1.0: 1.0, 2.0: 1.0}


def test_froc_pools_scans_and_a_scan_without_lesions():
    prob, ref = _scan()
    quiet_prob = np.zeros_like(prob)
    quiet_prob[5:7, 5:7, 5:7] = 0.8  # one false positive up to threshold 0.8
    counts = [froc_counts(prob, ref, (1, 1, 1), ANY, THRESHOLDS),
              froc_counts(quiet_prob, np.zeros_like(ref), (1, 1, 1), ANY, THRESHOLDS)]  # fmt: skip
    curve = froc(counts)
    assert curve.n_scans == 2 and curve.n_ref_lesions == 2
    assert curve.fp_per_scan.tolist() == [1.0, 1.0, 0.5, 0.0]
    assert sensitivity_at_fp(curve, (0.5,)) == {0.5: 0.5}
    assert sensitivity_at_fp(curve, (0.1,))[0.1] == 0.0  # only threshold 0.95 has no FP
    empty = froc([counts[1]])
    assert all(math.isnan(s) for s in empty.sensitivity)


def test_froc_small_components_follow_the_rule():
    prob, ref = _scan()
    prob[14, 14, 14] = 0.99  # a one-voxel false positive: removed by the msseg 3 mm3 minimum
    msseg = froc_counts(prob, ref, (1, 1, 1), DetectionRule.preset("msseg"), THRESHOLDS)
    assert msseg.false_positives.tolist() == [1, 1, 0, 0]
    assert froc_counts(prob, ref, (1, 1, 1), ANY, THRESHOLDS).false_positives.tolist() == [2, 2, 1, 1]


def test_froc_drops_small_predicted_components_only():
    prob, ref = _scan()
    prob[14, 14, 13:15] = 0.99  # a 2-voxel (2 mm3) false positive at every threshold
    assert froc_counts(prob, ref, (1, 1, 1), ANY, THRESHOLDS).false_positives.tolist() == [2, 2, 1, 1]
    small_gone = froc_counts(prob, ref, (1, 1, 1), ANY, THRESHOLDS, min_pred_mm3=2.0)
    assert small_gone.false_positives.tolist() == [1, 1, 0, 0]
    assert small_gone.detected.tolist() == [2, 1, 1, 0] and small_gone.n_ref == 2
    # Every predicted lesion is 8 mm3 or less: none is left, the reference keeps its two lesions.
    none_left = froc_counts(prob, ref, (1, 1, 1), ANY, THRESHOLDS, min_pred_mm3=8.0)
    assert none_left.predicted.tolist() == [0, 0, 0, 0] and none_left.n_ref == 2


def test_froc_rejects_bad_input():
    prob, ref = _scan()
    with pytest.raises(ValueError, match="thresholds"):
        froc_counts(prob, ref, (1, 1, 1), ANY, (0.0, 0.5))
    with pytest.raises(ValueError, match="prob"):
        froc_counts(prob * 2, ref, (1, 1, 1), ANY, THRESHOLDS)
    with pytest.raises(ValueError, match="min_pred_mm3"):
        froc_counts(prob, ref, (1, 1, 1), ANY, THRESHOLDS, min_pred_mm3=-1.0)
    with pytest.raises(ValueError, match="different thresholds"):
        froc([froc_counts(prob, ref, (1, 1, 1), ANY, (0.5,)), froc_counts(prob, ref, (1, 1, 1), ANY, (0.6,))])


def test_roc_auc_by_hand():
    # Positive 0.35 beats one of two negatives, positive 0.8 beats both: 3 of 4 pairs.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts one half
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    with pytest.raises(ValueError, match="labels"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="scores"):
        roc_auc([0, 1], [0.1, math.nan])


def test_patient_metrics_and_reproducible_bootstrap():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.6, 0.3, 0.7, 0.4, 0.9, 0.8]
    m = patient_metrics(labels, scores, 0.5, n_boot=500, seed=3)
    assert (m.n_active, m.n_inactive) == (4, 4)
    assert m.auc == pytest.approx(15 / 16)  # 0.4 loses to the negative 0.6; the other 15 pairs win
    assert m.sensitivity == 0.75 and m.specificity == 0.75
    assert m.auc_ci[0] <= m.auc <= m.auc_ci[1] <= 1.0
    assert m.sensitivity_ci[0] <= 0.75 <= m.sensitivity_ci[1]
    again = patient_metrics(labels, scores, 0.5, n_boot=500, seed=3)
    assert again == m
    assert patient_metrics(labels, scores, 0.5, n_boot=500, seed=4).auc_ci != m.auc_ci


def test_roc_auc_agrees_with_scikit_learn_on_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # many ties
    assert roc_auc(labels.astype(int), scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_bootstrap_drops_resamples_without_both_classes():
    rng = np.random.default_rng(0)
    low, high, n_valid = bootstrap_ci(_auc_rows, [0, 1], [0.2, 0.8], n_boot=200, rng=rng)
    assert 0 < n_valid < 200  # half of the resamples hold one class only
    assert low == high == 1.0
    one_class = patient_metrics([1, 1, 1], [0.2, 0.7, 0.9], 0.5, n_boot=50)
    assert math.isnan(one_class.auc) and math.isnan(one_class.specificity)
    assert math.isnan(one_class.auc_ci[0]) and one_class.sensitivity == pytest.approx(2 / 3)
