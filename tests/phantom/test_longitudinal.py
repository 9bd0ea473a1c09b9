"""The two-timepoint phantom: its new / enlarging truth matches its images, and the prior's head move is recorded."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest

from gdfree.phantom.cohort import write_cohort
from gdfree.phantom.config import PhantomConfig
from gdfree.phantom.lesions import render_lesion
from gdfree.phantom.longitudinal import STATUSES, PairConfig, apply_move, draw_pair
from gdfree.phantom.subject import render_subject, sample_subject
from gdfree.types import POST_CONTRAST

CFG = PhantomConfig(resolution_mm=2, lesions_min=12, lesions_max=16, active_count_probs=(0.0, 0.0, 1.0))
PAIR = PairConfig(new_inactive=0.3, enlarging=0.5, shrinking=0.3)


def _boxes(lesions: list, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Every voxel a lesion's rendering may touch (lesion, halo and their reach)."""
    out = np.zeros(shape, bool)
    for lesion in lesions:
        r = render_lesion(lesion, affine, shape, halo_radius_mm=CFG.halo_radius_mm, halo_width_mm=CFG.halo_width_mm,
                          supersample=CFG.supersample_factor)  # fmt: skip
        out[r.slices] = True
    return out


def test_prior_differs_from_the_followup_only_where_lesions_changed() -> None:
    params, anat = sample_subject(np.random.default_rng([5, 0]), CFG, "001", [5, 0])
    images, masks, affine = render_subject(params, CFG, anat)
    prior, status = draw_pair(np.random.default_rng([5, 0, 2]), params, CFG, PAIR)
    assert set(status.values()) <= set(STATUSES) and set(status) == {les.id for les in params.lesions}
    assert {"new", "enlarging", "stable"} <= set(status.values())
    assert all(status[les.id] == "new" for les in params.lesions if les.active)  # enhancing lesions are new
    assert any(status[les.id] == "new" and not les.active for les in params.lesions)  # new, past enhancement
    old_ids = {les.id: les for les in prior.lesions}
    assert all((status[i] == "new") == (i not in old_ids) for i in status)
    assert not any(les.active for les in prior.lesions)
    # the prior imaged like the follow-up (same gains, bias, noise), to compare voxels one by one
    same = dataclasses.replace(prior, gain=params.gain, bias=params.bias, noise_seed=params.noise_seed)
    old_images, old_masks, _ = render_subject(same, CFG, anat, vessel_lesions=params.lesions)
    shape = masks["lesion"].shape
    changed = [les for les in params.lesions if status[les.id] != "stable"]
    moved = _boxes(changed + [old_ids[les.id] for les in changed if les.id in old_ids], affine, shape)
    for role in (*CFG.modalities, POST_CONTRAST):
        assert np.array_equal(images[role][~moved], old_images[role][~moved]), role
    for lesion in params.lesions:
        r = render_lesion(lesion, affine, shape, halo_radius_mm=CFG.halo_radius_mm, halo_width_mm=CFG.halo_width_mm,
                          supersample=CFG.supersample_factor)  # fmt: skip
        inside = np.zeros(shape, bool)
        inside[r.slices] = r.lesion >= 0.5
        if not inside.any():
            continue
        gain = float(np.median(images["FLAIR"][inside] - old_images["FLAIR"][inside]))
        if status[lesion.id] == "new":
            assert not old_masks["lesion"][inside].any() and gain > 100, lesion.id  # absent before, brighter now
        elif status[lesion.id] == "stable":
            assert old_masks["lesion"][inside].all() and gain == 0, lesion.id
        elif status[lesion.id] == "enlarging":
            assert old_ids[lesion.id].scale < 1 and old_ids[lesion.id].mask_voxels < lesion.mask_voxels


@pytest.fixture(scope="module")
def pair_cohort(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pairs")
    rows = write_cohort(out, CFG, 1, seed=3, timepoints=2, pair=PAIR)
    return out, rows[0]


def test_written_pair_records_the_move_and_the_statuses(pair_cohort) -> None:
    out, row = pair_cohort
    truth = out / "derivatives" / "phantom" / "sub-001"
    old = json.loads((truth / "ses-1" / "anat" / "sub-001_ses-1_phantom.json").read_text())
    new = json.loads((truth / "ses-2" / "anat" / "sub-001_ses-2_phantom.json").read_text())
    assert row["n_new"] == new["n_new"] == sum(les["status"] == "new" for les in new["lesions"]) > 0
    change = nib.load(truth / "ses-2" / "anat" / "sub-001_ses-2_desc-change_dseg.nii.gz").get_fdata()
    lesion = nib.load(truth / "ses-2" / "anat" / "sub-001_ses-2_label-lesion_mask.nii.gz").get_fdata() > 0
    assert set(np.unique(change)) <= {0, 1, 2, 3, 4} and ((change > 0) <= lesion).all() and (change == 1).any()
    f2 = nib.load(out / "sub-001" / "ses-2" / "anat" / "sub-001_ses-2_FLAIR.nii.gz")
    f1 = nib.load(out / "sub-001" / "ses-1" / "anat" / "sub-001_ses-1_FLAIR.nii.gz").get_fdata()
    move = np.asarray(old["move_ras"])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert np.allclose(flip @ np.asarray(old["followup_to_prior_lps"]) @ flip, np.linalg.inv(move), atol=1e-5)
    assert not np.allclose(move, np.eye(4), atol=1e-3)
    back = apply_move(f1, f2.affine, np.linalg.inv(move))
    a = f2.get_fdata()
    brain = a > 0.3 * np.median(a[a > 0])

    def corr(x: np.ndarray) -> float:
        return float(np.corrcoef(a[brain], x[brain])[0, 1])

    assert corr(back) > corr(f1) + 0.05  # the recorded move undoes the repositioning
    assert (out / "derivatives" / "phantom" / "longitudinal.json").is_file()
