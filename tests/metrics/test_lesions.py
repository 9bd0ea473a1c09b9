"""Lesion detection rules on hand-built geometry, each outcome written down; plus real masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from gdfree.metrics import DetectionRule, label_lesions, match_lesions, voxel_metrics
from gdfree.metrics.lesions import bootstrap_pooled_f1, lesion_f1
from gdfree.metrics.patient import percentile_ci

MSSEG = DetectionRule.preset("msseg")
IOU = DetectionRule.preset("iou")
ANY = DetectionRule.preset("any")


def test_presets_and_validation():
    assert (MSSEG.min_volume_mm3, MSSEG.alpha, MSSEG.beta, MSSEG.gamma, MSSEG.connectivity) == (3.0, 0.1, 0.7, 0.65, 6)
    assert IOU.min_volume_mm3 == 0.0 and IOU.iou_threshold == 0.25
    assert DetectionRule.preset("iou", iou_threshold=0.5).iou_threshold == 0.5
    for bad, match in (({"name": "dice"}, "rule"), ({"connectivity": 8}, "connectivity"),
                       ({"min_volume_mm3": -1}, "min_volume_mm3"), ({"alpha": 0}, "alpha")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            DetectionRule(**bad)


def test_touching_lesions_and_connectivity():
    m = np.zeros((5, 5, 5), bool)
    m[1, 1, 1] = m[2, 2, 1] = True  # share an edge: 18-connected
    m[3, 3, 2] = True  # shares a corner with (2, 2, 1): 26-connected
    assert label_lesions(m, (1, 1, 1), 6)[1] == 3
    assert label_lesions(m, (1, 1, 1), 18)[1] == 2
    assert label_lesions(m, (1, 1, 1), 26)[1] == 1


def test_min_volume_is_strict_and_uses_physical_spacing():
    m = np.zeros((12, 5, 5), bool)
    m[0:3, 0, 0] = True  # 3 voxels
    m[5:9, 0, 0] = True  # 4 voxels
    assert label_lesions(m, (1, 1, 1), min_volume_mm3=3.0)[1] == 1  # 3 mm3 is removed, 4 mm3 kept
    # 2 mm3 voxels: floor(3 / 2) + 1 = 2 voxels needed; both components are kept, a single voxel is not.
    m[11, 0, 0] = True
    assert label_lesions(m, (1, 1, 2), min_volume_mm3=3.0)[1] == 2


def _two_cubes_and_a_bar() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((4, 4, 10), bool)
    ref[1:3, 1:3, 1:3] = True  # 8 voxels
    ref[1:3, 1:3, 5:7] = True  # 8 voxels, 2 voxels apart
    pred = np.zeros_like(ref)
    pred[1:3, 1:3, 1:7] = True  # one bar: 16 voxels inside the lesions, 8 in the gap
    return pred, ref


def test_one_prediction_covering_two_lesions():
    pred, ref = _two_cubes_and_a_bar()
    msseg = match_lesions(pred, ref, (1, 1, 1), MSSEG)
    # Each lesion fully covered by a component 8/24 outside every lesion (<= 70%): both detected.
    # The bar: 16/24 covered (> 10%); lesions taken in order until 65% of that is reached, neither
    # outside the bar: a true positive.
    assert (msseg.n_ref, msseg.n_pred, msseg.tp_ref, msseg.tp_pred) == (2, 1, 2, 1)
    assert msseg.f1 == 1.0
    iou = match_lesions(pred, ref, (1, 1, 1), IOU)  # IoU 8/24 = 0.33 with each lesion
    assert (iou.tp_ref, iou.tp_pred, iou.f1) == (2, 1, 1.0)
    strict = match_lesions(pred, ref, (1, 1, 1), DetectionRule.preset("iou", iou_threshold=0.5))
    assert (strict.tp_ref, strict.tp_pred, strict.fp, strict.fn) == (0, 0, 1, 2)
    assert strict.f1 == 0.0
    assert match_lesions(pred, ref, (1, 1, 1), ANY).f1 == 1.0


def test_a_prediction_spilling_outside_detects_nothing_under_msseg():
    ref = np.zeros((4, 4, 12), bool)
    ref[1:3, 1:3, 1:3] = True  # 8 voxels
    pred = np.zeros_like(ref)
    pred[1:3, 1:3, 1:11] = True  # 40 voxels, 32 outside: 80% > 70%
    msseg = match_lesions(pred, ref, (1, 1, 1), MSSEG)
    assert (msseg.tp_ref, msseg.tp_pred) == (0, 1)  # the lesion lies wholly inside the component: it is a TP
    assert msseg.sensitivity == 0.0 and msseg.precision == 1.0 and msseg.f1 == 0.0
    iou = match_lesions(pred, ref, (1, 1, 1), IOU)  # IoU 0.2
    assert (iou.tp_ref, iou.tp_pred, iou.f1) == (0, 0, 0.0)
    assert match_lesions(pred, ref, (1, 1, 1), ANY).f1 == 1.0


def test_msseg_alpha_needs_more_than_ten_percent():
    ref = np.zeros((6, 6, 8), bool)
    ref[1:3, 1:5, 1:6] = True  # 40 voxels
    pred = np.zeros_like(ref)
    pred[1, 1, 1:5] = True  # 4 voxels = 10%: not more than alpha
    assert match_lesions(pred, ref, (1, 1, 1), MSSEG).tp_ref == 0
    pred[1, 1, 5] = True  # 5 voxels = 12.5%
    found = match_lesions(pred, ref, (1, 1, 1), MSSEG)
    # Detected; but the component is not a TP: 35/40 of the lesion is outside it (> beta).
    assert (found.tp_ref, found.tp_pred) == (1, 0)


@pytest.mark.parametrize(("inside", "detected"), [(5, False), (6, True)])
def test_msseg_gamma_stops_before_a_spilling_component(inside: int, detected: bool):
    # A 10-voxel line lesion; component A covers `inside` voxels of it, component B covers the last
    # 9 - inside and spills outside (more than 70% of B). Covered: 9 voxels. A alone accounts for
    # 5/9 = 0.56 < gamma (B is tested and fails) or 6/9 = 0.67 >= gamma (B is never tested).
    ref = np.zeros((12, 3, 10), bool)
    ref[1, 1, :] = True
    pred = np.zeros_like(ref)
    pred[1, 1, :inside] = True
    pred[1, 1, inside + 1 :] = True
    spill = 10 if inside == 5 else 8  # outside voxels of B: 10/14 = 0.714 or 8/11 = 0.727
    pred[2 : 2 + spill // 2, 1, 8:10] = True
    assert label_lesions(pred, (1, 1, 1))[1] == 2
    assert match_lesions(pred, ref, (1, 1, 1), DetectionRule.preset("msseg", min_volume_mm3=0)).tp_ref == int(detected)


def test_empty_inputs():
    empty = np.zeros((5, 5, 5), bool)
    one = empty.copy()
    one[1:3, 1:3, 1:3] = True
    for rule in (MSSEG, IOU, ANY):
        both = match_lesions(empty, empty, (1, 1, 1), rule)
        assert (both.n_ref, both.n_pred, both.f1) == (0, 0, 1.0)
        assert math.isnan(both.sensitivity) and math.isnan(both.precision)
        no_ref = match_lesions(one, empty, (1, 1, 1), rule)
        assert (no_ref.fp, no_ref.f1, no_ref.precision) == (1, 0.0, 0.0) and math.isnan(no_ref.sensitivity)
        no_pred = match_lesions(empty, one, (1, 1, 1), rule)
        assert (no_pred.fn, no_pred.f1, no_pred.sensitivity) == (1, 0.0, 0.0) and math.isnan(no_pred.precision)


def test_f1_formulas():
    # msseg: harmonic mean of 2/4 and 1/2; Shifts: TP / (TP + (FP + FN) / 2) with TP on predictions.
    assert lesion_f1("msseg", 4, 2, 2, 1) == pytest.approx(0.5)
    assert lesion_f1("iou", 4, 2, 2, 1) == pytest.approx(1 / (1 + 0.5 * (1 + 2)))


def test_volume_bins_and_centroids():
    m = np.zeros((20, 20, 20), bool)
    m[0:2, 0:5, 0] = True  # 10 mm3: "<=10" (bins are (low, high])
    m[5:7, 0:11, 5] = True  # 22 mm3
    m[10:18, 10:18, 10:14] = True  # 256 mm3
    match = match_lesions(m, m, (1, 1, 1), ANY)
    bins = {row["volume_bin"]: row for row in match.by_volume()}
    assert [bins[b]["n_ref_lesions"] for b in ("<=10", "10-50", "50-200", ">200")] == [1, 1, 0, 1]
    assert math.isnan(bins["50-200"]["lesion_sensitivity"])
    assert bins[">200"]["lesion_sensitivity"] == 1.0
    assert {tuple(c) for c in match.ref_centroid_vox.tolist()} == {(0.5, 2.0, 0.0), (5.5, 5.0, 5.0), (13.5, 13.5, 11.5)}


@pytest.mark.shared
def test_real_lesion_mask_against_shifted_and_eroded_copies(shared_data: Path):
    import nibabel as nib

    patient = shared_data / "cross_sectional" / "MNI" / "patient07"
    path = patient / "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
    ref = np.asarray(nib.load(path).dataobj) > 0.5
    spacing = (1.0, 1.0, 1.0)
    n_ref = label_lesions(ref, spacing, 6, 3.0)[1]
    assert n_ref > 10

    itself = match_lesions(ref, ref, spacing, MSSEG)
    assert (itself.tp_ref, itself.tp_pred, itself.f1) == (n_ref, n_ref, 1.0)

    # A 1 mm shift: every surface voxel of the copy has one of the original within 1 mm, so HD = 1 mm.
    from gdfree.metrics import surface_distances

    shifted = np.roll(ref, 1, axis=0)
    assert surface_distances(shifted, ref, spacing)["hd_mm"] == 1.0
    # The same shift along an axis of 2 mm voxels is 2 mm.
    assert surface_distances(shifted, ref, (2.0, 1.0, 1.0))["hd_mm"] == 2.0

    # Erosion keeps a subset: voxel precision 1, Dice 2|E| / (|E| + |R|), and under the "any" rule every
    # eroded piece is a true positive and a lesion is detected exactly when some of it survives.
    eroded = ndimage.binary_erosion(ref)
    vm = voxel_metrics(eroded, ref, spacing)
    assert vm["precision"] == 1.0
    assert vm["dice"] == pytest.approx(2 * eroded.sum() / (eroded.sum() + ref.sum()))
    any_match = match_lesions(eroded, ref, spacing, ANY)
    labels, n_all = label_lesions(ref, spacing)
    survivors = len(np.unique(labels[eroded]))
    assert any_match.precision == 1.0
    assert (any_match.n_ref, any_match.tp_ref) == (n_all, survivors)
    assert survivors < n_all  # thin lesions vanish under erosion


def test_bootstrap_pooled_f1_agrees_with_lesion_f1_and_pairs_models():
    rng = np.random.default_rng(3)
    n_ref, n_pred = rng.integers(0, 5, 12), rng.integers(0, 5, 12)
    a = np.stack([n_ref, n_pred, rng.integers(0, n_ref + 1), rng.integers(0, n_pred + 1)], axis=1)
    b = a.copy()
    b[:, 3] = 0  # a model with no true-positive prediction
    for rule in ("msseg", "iou"):
        boot = bootstrap_pooled_f1([a, b, a], rule, n_boot=50, seed=1)
        assert boot.shape == (50, 3)
        # each resample is the F1 of the summed counts of the drawn patients
        idx = np.random.default_rng(1).integers(0, 12, (50, 12))
        for row, draw in zip(boot, idx, strict=True):
            assert row[0] == pytest.approx(lesion_f1(rule, *(int(v) for v in a[draw].sum(axis=0))))
        np.testing.assert_array_equal(boot[:, 0], boot[:, 2])  # same resamples for every model: paired
        assert (boot[:, 1] <= boot[:, 0] + 1e-12).all()
    # no lesion anywhere in a resample scores 1, lesions on one side only 0, as lesion_f1 says
    empty = np.zeros((3, 4), int)
    assert bootstrap_pooled_f1([empty], "msseg", n_boot=5)[:, 0].tolist() == [1.0] * 5
    only_ref = np.array([[2, 0, 0, 0]] * 3)
    assert bootstrap_pooled_f1([only_ref], "msseg", n_boot=5)[:, 0].tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="same n"):
        bootstrap_pooled_f1([a, a[:5]], "msseg")
    with pytest.raises(ValueError, match="tp_ref <= n_ref"):
        bootstrap_pooled_f1([np.array([[1, 1, 2, 0]])], "msseg")


def test_percentile_ci_drops_nan():
    low, high, n = percentile_ci([np.nan, *range(101)], 0.9)
    assert (low, high, n) == (pytest.approx(5.0), pytest.approx(95.0), 101)
    assert math.isnan(percentile_ci([1.0, np.nan])[0])
