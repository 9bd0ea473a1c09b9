"""Voxel and surface metrics on hand-computed geometry; every empty case written down."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gdfree.metrics import dice, normalized_dice, surface_distances, voxel_metrics


def _mask(shape: tuple[int, int, int], *voxels: tuple[int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for v in voxels:
        m[v] = True
    return m


def test_dice_two_against_three_voxels_sharing_one():
    pred = _mask((4, 4, 4), (0, 0, 0), (1, 0, 0))
    ref = _mask((4, 4, 4), (1, 0, 0), (2, 0, 0), (3, 0, 0))
    assert dice(pred, ref) == pytest.approx(0.4)


def test_ndsc_rescales_false_positives_by_the_lesion_load():
    # 1000 voxels, 10 reference, 10 predicted, 5 shared: k = 0.999*10 / (0.001*990) = 10.0909...
    ref = np.zeros((10, 10, 10), bool)
    pred = ref.copy()
    ref.flat[:10] = True
    pred.flat[5:15] = True
    assert normalized_dice(pred, ref) == pytest.approx(10 / (15 + 5 * 9.99 / 0.99))
    assert dice(pred, ref) == pytest.approx(0.5)


def test_ndsc_equals_dice_when_the_load_is_the_reference_load():
    # 1 lesion voxel in 1000 is a load of 0.001: k = 1.
    ref = _mask((10, 10, 10), (0, 0, 0))
    pred = _mask((10, 10, 10), (0, 0, 0), (5, 5, 5))
    assert normalized_dice(pred, ref) == pytest.approx(dice(pred, ref)) == pytest.approx(2 / 3)


def test_volumes_use_anisotropic_spacing():
    pred = _mask((4, 4, 4), (0, 0, 0), (1, 0, 0), (2, 0, 0))
    ref = _mask((4, 4, 4), (0, 0, 0), (1, 0, 0))
    m = voxel_metrics(pred, ref, (1.0, 2.0, 3.0))  # 6 mm3 voxels
    assert m["volume_pred_mm3"] == 18.0 and m["volume_ref_mm3"] == 12.0
    assert m["volume_difference_mm3"] == 6.0
    assert m["avd_percent"] == pytest.approx(50.0)
    assert m["sensitivity"] == 1.0 and m["precision"] == pytest.approx(2 / 3)


def test_empty_inputs():
    empty = np.zeros((4, 4, 4), bool)
    one = _mask((4, 4, 4), (1, 1, 1))
    both = voxel_metrics(empty, empty, (1, 1, 1))
    assert both["dice"] == 1.0 and both["ndsc"] == 1.0 and both["avd_percent"] == 0.0
    assert math.isnan(both["sensitivity"]) and math.isnan(both["precision"])
    no_ref = voxel_metrics(one, empty, (1, 1, 1))
    assert no_ref["dice"] == 0.0 and no_ref["ndsc"] == 0.0 and no_ref["precision"] == 0.0
    assert math.isnan(no_ref["sensitivity"]) and math.isnan(no_ref["avd_percent"])
    no_pred = voxel_metrics(empty, one, (1, 1, 1))
    assert no_pred["dice"] == 0.0 and no_pred["sensitivity"] == 0.0 and no_pred["avd_percent"] == 100.0
    assert math.isnan(no_pred["precision"])
    assert surface_distances(empty, empty, (1, 1, 1)) == {"hd_mm": 0.0, "hd95_mm": 0.0, "assd_mm": 0.0}
    assert all(math.isnan(v) for v in surface_distances(one, empty, (1, 1, 1)).values())
    assert all(math.isnan(v) for v in surface_distances(empty, one, (1, 1, 1)).values())


def test_two_voxels_two_mm_apart_under_anisotropic_spacing():
    pred = _mask((4, 4, 4), (1, 1, 1))
    ref = _mask((4, 4, 4), (1, 2, 1))
    d = surface_distances(pred, ref, (1.0, 2.0, 3.0))
    assert d == {"hd_mm": 2.0, "hd95_mm": 2.0, "assd_mm": 2.0}
    diagonal = surface_distances(pred, _mask((4, 4, 4), (2, 1, 2)), (1.0, 2.0, 3.0))
    assert diagonal["hd_mm"] == pytest.approx(math.sqrt(1 + 9))


def test_cube_shifted_by_one_voxel():
    # 3x3x3 cube (26 surface voxels), copy shifted one voxel (2 mm) along z. Per direction: 9 voxels at
    # 2 mm (the far face), 1 at 1 mm (the other cube's centre), 16 on the other surface (0 mm).
    ref = np.zeros((5, 5, 6), bool)
    ref[1:4, 1:4, 1:4] = True
    pred = np.roll(ref, 1, axis=2)
    d = surface_distances(pred, ref, (1.0, 1.0, 2.0))
    assert d["hd_mm"] == 2.0
    assert d["hd95_mm"] == 2.0
    assert d["assd_mm"] == pytest.approx(2 * (9 * 2 + 1) / 52)
    # The 50th percentile of 16 zeros, one 1 and nine 2s is 0.
    assert surface_distances(pred, ref, (1.0, 1.0, 2.0), percentile=50)["hd95_mm"] == 0.0


def test_surface_of_a_mask_touching_the_image_border():
    ref = np.ones((3, 3, 3), bool)  # every voxel but the centre is on the surface, border included
    pred = ref.copy()
    pred[2] = False
    d = surface_distances(pred, ref, (1, 1, 1))
    assert d["hd_mm"] == 1.0


def test_bad_arguments_name_themselves():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(ValueError, match="spacing_mm"):
        voxel_metrics(a, a, (1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        surface_distances(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="share one grid"):
        dice(a, np.zeros((4, 4, 5), bool))
    with pytest.raises(ValueError, match="pred: expected a 3-D"):
        dice(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        dice(np.full((2, 2, 2), np.nan), a[:2, :2, :2])
