"""A prior brought onto its follow-up: the phantom's known head move is recovered, new lesions stand out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdfree.io.images import read_mask, read_volume, to_sitk
from gdfree.phantom.cohort import write_cohort
from gdfree.phantom.config import PhantomConfig
from gdfree.phantom.longitudinal import PairConfig
from gdfree.preprocess.pair import PairConfig as ExamPairConfig
from gdfree.preprocess.pair import pair_exams, prior_coverage
from gdfree.preprocess.registration import mean_displacement


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pair")
    cfg = PhantomConfig(resolution_mm=2, lesions_min=12, lesions_max=16, active_count_probs=(0.0, 0.0, 1.0))
    write_cohort(out, cfg, 1, seed=4, timepoints=2, pair=PairConfig(move_degrees=(3.0, 5.0), move_mm=(4.0, 6.0)))
    anat = {s: out / "sub-001" / f"ses-{s}" / "anat" for s in ("1", "2")}
    exams = {s: {r: read_volume(anat[s] / f"sub-001_ses-{s}_{r}.nii.gz") for r in ("FLAIR", "T2w")} for s in anat}
    truth = out / "derivatives" / "phantom" / "sub-001"
    brain = read_mask(truth / "ses-2" / "anat" / "sub-001_ses-2_desc-brain_mask.nii.gz").data
    change = read_volume(truth / "ses-2" / "anat" / "sub-001_ses-2_desc-change_dseg.nii.gz").data
    move = np.asarray(json.loads((truth / "ses-1" / "anat" / "sub-001_ses-1_phantom.json").read_text())
                      ["followup_to_prior_lps"])  # fmt: skip
    return exams, brain, change, move


def test_registration_recovers_the_head_move_and_new_lesions_stand_out(pair) -> None:
    exams, brain, change, move = pair
    paired = pair_exams(exams["2"], exams["1"], brain)
    unmoved = mean_displacement(np.eye(4), move, to_sitk(exams["2"]["FLAIR"]), brain)
    assert unmoved > 4.0  # the prior really moved (mm, mean over the brain)
    assert mean_displacement(paired.transform, move, to_sitk(exams["2"]["FLAIR"]), brain) < 1.0  # 2 mm voxels
    assert paired.correlation > 0.8 and not paired.problems
    z = paired.difference["FLAIR"].data
    assert np.median(z[change == 1]) > 5 and abs(np.median(z[brain & (change == 0)])) < 0.5
    assert set(paired.prior) == set(paired.difference) == {"FLAIR", "T2w"}
    for role, volume in paired.prior.items():  # intensity-matched: the same brain median as the follow-up
        assert volume.shape == exams["2"][role].shape
        ratio = np.median(volume.data[brain]) / np.median(exams["2"][role].data[brain])
        assert abs(ratio - 1) < 0.02, role


def test_a_wrong_transform_is_reported_and_a_missing_reference_refused(pair) -> None:
    exams, brain, _, move = pair
    wrong = move.copy()
    wrong[:3, 3] += 8.0
    import SimpleITK as sitk

    tfm = sitk.AffineTransform(3)
    tfm.SetMatrix(wrong[:3, :3].ravel().tolist())
    tfm.SetTranslation(wrong[:3, 3].tolist())
    assert pair_exams(exams["2"], exams["1"], brain, transform=tfm).problems
    with pytest.raises(ValueError, match="prior exam has no FLAIR"):
        pair_exams(exams["2"], {"T2w": exams["1"]["T2w"]}, brain)


def test_where_the_prior_has_no_data_nothing_changed(pair) -> None:
    """A prior that lost its top slices of brain (a thick-slice exam's field of view) reads "no change" there, not
    a large increase, and the pair says how much of the brain it covers."""
    from gdfree.types import Volume

    exams, brain, change, _ = pair
    full = pair_exams(exams["2"], exams["1"], brain)
    assert full.coverage > 0.97
    top = int(np.nonzero(brain.any(axis=(0, 1)))[0].max())
    cut = {r: Volume(v.data[:, :, : top - 6].copy(), v.affine) for r, v in exams["1"].items()}
    paired = pair_exams(exams["2"], cut, brain)
    z, prior = paired.difference["FLAIR"].data, paired.prior["FLAIR"].data
    gone = brain & ~prior_coverage(cut["FLAIR"], exams["2"]["FLAIR"], paired.transform)
    assert gone.sum() > 100 and not gone[:, :, : top - 20].any()
    assert np.all(z[gone] == 0)
    assert np.array_equal(prior[gone], exams["2"]["FLAIR"].data[gone])
    assert paired.coverage < full.coverage - 0.01
    kept = brain & (change == 0)
    kept[:, :, top - 20 :] = False
    assert abs(np.median(z[kept])) < 0.5 and np.median(z[change == 1]) > 5
    strict = pair_exams(exams["2"], cut, brain, ExamPairConfig(min_coverage=0.999))
    assert any("covers" in p for p in strict.problems)
