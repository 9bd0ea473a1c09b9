"""``prepare`` on a synthetic subject misaligned by known rigid transforms, with known enhancing truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gdfree.io.adapters import discover
from gdfree.io.images import read_volume
from gdfree.metrics.lesions import DetectionRule, match_lesions
from gdfree.preprocess.native import to_native
from gdfree.preprocess.prepare import PrepareConfig, prepare_dataset
from gdfree.preprocess.record import PrepareRecord
from gdfree.preprocess.registration import mean_displacement, read_transform


@pytest.fixture(scope="module")
def misaligned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A 2 mm phantom subject with three active lesions whose T1w, T2w and post-Gd T1w are moved by random
    rigid transforms (5-10 degrees, 5-10 mm per axis); FLAIR and the masks stay where they were."""
    from gdfree.phantom.cohort import PhantomConfig, write_cohort
    from gdfree.phantom.misalign import misalign_cohort

    truth = tmp_path_factory.mktemp("truth")
    write_cohort(truth, PhantomConfig(resolution_mm=2, active_count_probs=(0, 0, 0, 1.0)), 1, seed=5)
    src = tmp_path_factory.mktemp("src")
    moves = misalign_cohort(truth, src, seed=2)["sub-001"]
    return truth, src, {k: np.asarray(v) for k, v in moves.items()}


@pytest.mark.slow
def test_prepare_recovers_the_moves_and_the_enhancing_truth(misaligned, tmp_path: Path):
    truth, src, moves = misaligned
    out = tmp_path / "prepared"
    (case,) = discover(src)
    case.masks.pop("enhancing")  # derive it
    result = prepare_dataset([case], out, PrepareConfig())
    assert result.done == ["sub-001"] and not result.failed
    record = PrepareRecord.read(next(out.rglob("*_prepare.json")))
    flair = sitk.ReadImage(str(case.images["FLAIR"]))
    brain = read_volume(next(truth.rglob("*desc-brain_mask.nii.gz"))).data > 0
    for role in ("T1w", "T2w", "T1gd"):
        tfm = read_transform(out / record.outputs[f"xfm_{role}"])
        assert mean_displacement(tfm, moves[role], flair, brain) <= 2.0  # one voxel
    true_enh = read_volume(next(truth.rglob("*label-enhancing_mask.nii.gz")))
    derived = read_volume(out / record.outputs["mask_enhancing"])
    assert derived.same_grid(true_enh)
    d, t = derived.data > 0, true_enh.data > 0
    assert 2 * (d & t).sum() / (d.sum() + t.sum()) >= 0.8
    match = match_lesions(d, t, true_enh.spacing_mm, DetectionRule.preset("msseg"))
    big = [det for det, v in zip(match.ref_detected, match.ref_volume_mm3, strict=True) if v >= 20]
    assert big and np.mean(big) >= 0.9
    assert (out / record.outputs["qc_enhancing"]).stat().st_size > 10_000
    brain = record.brain_mask
    assert brain["brain_mask_source"] == "provided" and brain["brain_mask_dice_atlas_vs_provided"] > 0.85
    # back to the native (moved) T1w grid through the saved transform: the prepared T1w matches the source
    record_path = next(out.rglob("*_prepare.json"))
    prepared_t1 = read_volume(out / record.outputs["T1w"])
    native = to_native(prepared_t1, record_path, "T1w", interpolation="linear")
    source_t1 = read_volume(case.images["T1w"])
    assert native.same_grid(source_t1)
    inside = (native.data > 0) & (source_t1.data > 0)
    assert np.corrcoef(native.data[inside], source_t1.data[inside])[0, 1] > 0.9
    with pytest.raises(ValueError, match="output grid"):
        to_native(source_t1, record_path, "T1w")
    again = prepare_dataset([case], out, PrepareConfig())
    assert again.skipped == ["sub-001"] and not again.done
    prepared = discover(out)
    assert {"T1w", "T2w", "FLAIR", "T1gd"} <= set(prepared[0].images) and "enhancing" in prepared[0].masks
