"""Calibration, retention curves (checked against a direct re-computation) and translation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdfree.metrics import (
    expected_calibration_error,
    normalized_dice,
    reliability_table,
    retention_auc,
    retention_curve,
    translation_metrics,
)
from gdfree.metrics.calibration import RETENTION_FRACTIONS


def test_ece_by_hand():
    # Ten voxels at p = 0.9 of which five are positive: one bin, |0.9 - 0.5| = 0.4.
    assert expected_calibration_error(np.full(10, 0.9), np.arange(10) < 5) == pytest.approx(0.4)
    # Perfectly calibrated: p = 0.25 with one positive in four, and p = 1.0 (last bin) all positive.
    prob = np.array([0.25, 0.25, 0.25, 0.25, 1.0, 1.0])
    assert expected_calibration_error(prob, np.array([1, 0, 0, 0, 1, 1])) == pytest.approx(0.0)
    assert math.isnan(expected_calibration_error(np.zeros(0), np.zeros(0)))


def test_a_pooled_ece_that_hides_an_overconfident_top_bin_is_not_the_only_headline():
    from gdfree.evaluate.display import headline, threshold_text

    # the demo's case: a brain of near-zero background, and 50 voxels predicted 0.97 of which 19 are lesion
    prob = np.concatenate([np.full(100_000, 0.001), np.full(50, 0.97)])
    ref = np.concatenate([np.zeros(100_000, bool), np.arange(50) < 19])
    table = reliability_table(prob, ref)
    assert table.ece < 0.002  # what the pooled headline said (the demo: "ECE 0.0001")
    assert table.ece_above(0.1) == pytest.approx(0.97 - 0.38)
    gap = table.largest_gap()
    assert gap is not None and gap["bin_low"] == pytest.approx(0.9) and gap["gap"] == pytest.approx(0.59)
    pooled = {"lesion_f1": 0.5, "lesion_sensitivity": 0.5, "lesion_precision": 0.5, "lesion_tp_ref": 1,
              "n_ref_lesions": 2, "lesion_tp_pred": 1, "n_pred_lesions": 2, "fp_per_scan": 1.0}  # fmt: skip
    summary = {"per_case": {}, "pooled_lesions": pooled, "n_cases": 1,
               "config": {"rule": {"name": "msseg", "connectivity": 26, "min_volume_mm3": 0}},
               "calibration": {"ece": table.ece, "ece_p_ge_0.1": table.ece_above(0.1), "n_bins": 10,
                               "largest_gap": gap, "table": table.rows()}}  # fmt: skip
    shown = {metric: value for metric, value, _ in headline(summary)}
    assert shown["ECE, voxels with p >= 0.1"] == "0.5900" and shown["Largest calibration gap"] == "0.590"
    assert threshold_text(0.99999) == "0.99999" and threshold_text(0.5) == "0.5" and threshold_text(1.0) == "1"


def test_reliability_tables_add_up_to_the_pooled_table():
    rng = np.random.default_rng(1)
    p, y = rng.random(500), rng.random(500) < 0.3
    pooled = reliability_table(p, y, 5)
    split = reliability_table(p[:200], y[:200], 5) + reliability_table(p[200:], y[200:], 5)
    assert np.array_equal(pooled.count, split.count) and split.ece == pytest.approx(pooled.ece)
    rows = pooled.rows()
    assert len(rows) == 5 and sum(r["count"] for r in rows) == 500
    with pytest.raises(ValueError, match="prob"):
        reliability_table(np.array([1.5]), np.array([1]))


def _shifts_retention(pred: np.ndarray, ref: np.ndarray, unc: np.ndarray) -> np.ndarray:
    """The Shifts 2022 algorithm written directly: rebuild each mixed mask and score it."""
    order = np.argsort(unc, kind="stable")
    p, g = pred[order], ref[order]
    out = []
    for frac in RETENTION_FRACTIONS:
        pos = int(p.size * frac)
        out.append(normalized_dice(np.concatenate([p[:pos], g[pos:]]), g))
    return np.array(out)


def test_retention_curve_matches_the_direct_computation():
    rng = np.random.default_rng(2)
    ref = rng.random(3000) < 0.05
    pred = ref ^ (rng.random(3000) < 0.03)
    unc = rng.random(3000)
    curve = retention_curve(pred, ref, unc)
    assert np.allclose(curve, _shifts_retention(pred, ref, unc))
    assert curve[0] == 1.0  # nothing retained: the reference itself
    assert curve[-1] == pytest.approx(normalized_dice(pred, ref))


def test_an_informative_uncertainty_has_a_lower_r_auc():
    rng = np.random.default_rng(3)
    ref = rng.random(5000) < 0.05
    wrong = rng.random(5000) < 0.03
    pred = ref ^ wrong
    informative = wrong + 0.1 * rng.random(5000)  # errors are the least certain
    useless = rng.random(5000)
    assert retention_auc(retention_curve(pred, ref, informative)) < retention_auc(retention_curve(pred, ref, useless))
    perfect = retention_curve(ref, ref, useless)
    assert np.all(perfect == 1.0) and retention_auc(perfect) == pytest.approx(0.0)
    both_empty = retention_curve(np.zeros(10, bool), np.zeros(10, bool), np.arange(10))
    assert np.all(both_empty == 1.0)


def test_translation_metrics():
    rng = np.random.default_rng(4)
    ref = rng.random((12, 12, 12)) * 100
    mask = np.zeros(ref.shape, bool)
    mask[2:10, 2:10, 2:10] = True
    same = translation_metrics(ref, ref, mask)
    assert same["mae"] == 0.0 and same["psnr_db"] == math.inf and same["ssim"] == pytest.approx(1.0)
    shifted = translation_metrics(ref + 10.0, ref, mask)
    span = ref[mask].max() - ref[mask].min()
    assert shifted["mae"] == pytest.approx(10.0)
    assert shifted["psnr_db"] == pytest.approx(10 * math.log10(span**2 / 100.0))
    assert shifted["ssim"] < 1.0
    noisy = translation_metrics(ref + rng.normal(0, 30, ref.shape), ref, mask)
    assert noisy["ssim"] < shifted["ssim"]
    empty = translation_metrics(ref, ref, np.zeros(ref.shape, bool))
    assert all(math.isnan(v) for v in empty.values())
    with pytest.raises(ValueError, match="data_range"):
        translation_metrics(ref, np.ones_like(ref), mask)


def test_evaluate_sets_an_uncertainty_beside_the_probability_it_must_beat():
    """Issue 33: the retention curve of an uncertainty map is scored beside the same curve with voxels ordered
    by the probability alone, with their paired difference over cases; an uncertainty that is the probability's
    own entropy gains exactly nothing, one that points at the errors gains."""
    from gdfree.evaluate.cohort import evaluate_case, summarize
    from gdfree.evaluate.display import headline

    rng = np.random.default_rng(0)
    results_same, results_oracle = [], []
    for i in range(6):
        ref = np.zeros((10, 10, 10), bool)
        ref[2:6, 2:6, 2:6] = True
        prob = np.clip(np.where(ref, 0.7, 0.2) + rng.normal(0, 0.2, ref.shape), 0.001, 0.999)
        q = prob.astype(np.float64)
        entropy = -(q * np.log(q) + (1 - q) * np.log1p(-q))
        errors = ((prob >= 0.5) != ref).astype(float) + 0.01 * rng.random(ref.shape)
        for out, unc in ((results_same, entropy), (results_oracle, errors)):
            out.append(evaluate_case(ref, (2.0, 2.0, 2.0), case_id=f"c{i}", prob=prob, uncertainty=unc))
    same, oracle = summarize(results_same), summarize(results_oracle)
    assert same["retention_gain"]["mean"] == pytest.approx(0.0, abs=1e-9)
    assert oracle["retention_gain"]["mean"] > 0 and oracle["retention_gain"]["ci"][0] > 0
    assert any(label == "R-AUC gain over the probability" for label, _, _ in headline(oracle))
