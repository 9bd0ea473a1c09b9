"""New / enlarging / stable / shrinking lesions, and the subtraction baseline, on hand-made masks."""

from __future__ import annotations

import numpy as np

from gdfree.activity.change import change_region, fit_subtraction_k, lesion_changes, subtraction_lesions

SP = (1.0, 1.0, 1.0)


def _cube(shape: tuple[int, int, int], lo: tuple[int, ...], size: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[tuple(slice(a, a + size) for a in lo)] = True
    return out


def test_lesion_changes_calls_each_status() -> None:
    shape = (40, 40, 40)
    new = _cube(shape, (2, 2, 2), 4)
    grown_now, grown_before = _cube(shape, (12, 2, 2), 5), _cube(shape, (13, 3, 3), 3)  # 125 vs 27 voxels
    same = _cube(shape, (22, 2, 2), 4)
    shrunk_now, shrunk_before = _cube(shape, (30, 2, 2), 3), _cube(shape, (29, 1, 1), 5)
    gone = _cube(shape, (2, 30, 30), 4)  # in the prior only: not a follow-up lesion
    followup = new | grown_now | same | shrunk_now
    prior = grown_before | same | shrunk_before | gone
    labels, rows = lesion_changes(followup, prior, SP)
    status = {int(np.median(np.argwhere(labels == r["id"])[:, 0])): r["status"] for r in rows}
    assert status == {3: "new", 14: "enlarging", 23: "stable", 31: "shrinking"}
    grown = next(r for r in rows if r["status"] == "enlarging")
    assert (grown["volume_mm3"], grown["prior_volume_mm3"], grown["volume_change_mm3"]) == (125.0, 27.0, 98.0)


def test_subtraction_finds_a_bright_new_blob_and_k_is_fitted() -> None:
    rng = np.random.default_rng(0)
    shape = (30, 30, 30)
    brain = _cube(shape, (1, 1, 1), 28)
    truth = _cube(shape, (10, 10, 10), 4)
    pairs = []
    for _ in range(3):
        diff = rng.normal(0, 1, shape).astype(np.float32)
        diff[truth] += 8
        pairs.append((diff, change_region(brain, SP), truth, SP))
    k, scores = fit_subtraction_k(pairs, ks=(0.5, 1.0, 3.0, 5.0, 7.0, 9.0))
    assert k >= 3 and scores[k] == 1.0 and scores[0.5] < 0.5  # low k: noise components everywhere
    labels, n = subtraction_lesions(pairs[0][0], pairs[0][1], k, SP)
    assert n == 1 and ((labels > 0) <= truth).all()
    region = change_region(brain, SP)
    assert region.sum() < brain.sum() and not region[1, 15, 15]  # the brain's edge is left out
    wm = _cube(shape, (5, 5, 5), 10)
    grown = change_region(brain, SP, white_matter=wm)  # white matter grown by a voxel (6-neighbours), deep
    assert grown.sum() == 10**3 + 6 * 10**2 and grown[wm].all()
    assert not change_region(brain, SP, white_matter=brain)[1, 15, 15]
