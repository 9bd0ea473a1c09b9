"""Registration: transform algebra on hand-built cases, the real longitudinal patient against the upstream
transforms, and a synthetic subject misaligned by a known rigid transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from gdfree.io.images import from_sitk, to_sitk
from gdfree.preprocess.itk import transform_matrix, transform_points
from gdfree.preprocess.prepare import PrepareConfig
from gdfree.preprocess.registration import (
    RegistrationConfig,
    mean_displacement,
    move_image,
    read_transform,
    register,
    resample,
    rigid_matrix,
    write_transform,
)
from gdfree.types import Volume
from tests.conftest import oblique_affine


def _centre(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(((np.asarray(image.GetSize()) - 1) / 2).tolist()))


def test_transform_matrix_of_rigid_affine_and_composite():
    euler = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (4.0, -5.0, 6.0))
    points = np.array([[0.0, 0, 0], [10, -20, 30], [-7, 8, 9]])
    expected = np.array([euler.TransformPoint(p.tolist()) for p in points])
    assert np.allclose(transform_points(euler, points), expected)
    scale = sitk.ScaleTransform(3, (1.1, 0.9, 1.0))
    composite = sitk.CompositeTransform([euler, scale])
    expected = np.array([composite.TransformPoint(p.tolist()) for p in points])
    assert np.allclose(transform_points(composite, points), expected)
    bspline = sitk.BSplineTransformInitializer(sitk.Image([8, 8, 8], sitk.sitkFloat32), [2, 2, 2])
    params = np.zeros(bspline.GetNumberOfParameters())
    params[10] = 5.0
    bspline.SetParameters(params.tolist())
    with pytest.raises(ValueError, match="not affine"):
        transform_matrix(bspline)


def test_volume_sitk_round_trip_keeps_the_oblique_grid():
    vol = Volume(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6), oblique_affine((1.0, 2.0, 3.0)))
    back = from_sitk(to_sitk(vol))
    assert np.array_equal(back.data, vol.data) and np.allclose(back.affine, vol.affine)
    img = to_sitk(vol)
    # voxel (1, 2, 3): RAS from the affine equals LPS from SimpleITK with x, y negated
    ras = vol.affine @ np.array([1, 2, 3, 1.0])
    assert np.allclose(img.TransformIndexToPhysicalPoint((1, 2, 3)), ras[:3] * [-1, -1, 1])


def test_move_image_sends_every_voxel_through_the_matrix():
    img = to_sitk(Volume(np.zeros((6, 7, 8), np.float32), oblique_affine((1.0, 1.5, 2.0))))
    move = rigid_matrix((15, -10, 5), (10, -12, 3), _centre(img))
    moved = move_image(img, move)
    for index in [(0, 0, 0), (5, 6, 7), (2, 3, 4)]:
        p = np.asarray(img.TransformIndexToPhysicalPoint(index))
        assert np.allclose(moved.TransformIndexToPhysicalPoint(index), move[:3, :3] @ p + move[:3, 3])
    assert np.allclose(rigid_matrix((0, 0, 0), (0, 0, 0), (1, 2, 3)), np.eye(4))
    rot = rigid_matrix((20, 0, 0), (0, 0, 0), (0, 0, 0))[:3, :3]
    assert np.isclose(np.degrees(np.arccos((np.trace(rot) - 1) / 2)), 20)


def test_transform_file_round_trip_and_errors(tmp_path: Path):
    euler = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.2, 0.3, (4.0, -5.0, 6.0))
    path = write_transform(euler, tmp_path / "t1_to_flair.tfm")
    assert np.allclose(transform_matrix(read_transform(path)), transform_matrix(euler))
    assert [p.name for p in tmp_path.iterdir()] == ["t1_to_flair.tfm"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match=r"missing\.tfm"):
        read_transform(tmp_path / "missing.tfm")
    (tmp_path / "bad.tfm").write_text("not a transform\n")
    with pytest.raises(ValueError, match=r"bad\.tfm"):
        read_transform(tmp_path / "bad.tfm")


def test_resample_then_inverse_restores_the_image():
    data = np.zeros((20, 20, 20), np.float32)
    data[6:14, 5:12, 8:15] = 100.0
    img = to_sitk(Volume(data, np.diag([2.0, 2.0, 2.0, 1.0])))
    shift = sitk.TranslationTransform(3, (4.0, -2.0, 6.0))  # whole voxels: nearest neighbour is exact
    there = resample(img, img, shift, interpolation="nearest")
    # output point p samples the input at p + t (LPS): RAS (-4, +2, +6) mm = index (-2, +1, +3)
    expected = np.zeros_like(data)
    expected[8:16, 4:11, 5:12] = 100.0
    assert np.array_equal(from_sitk(there).data, expected)
    back = resample(there, img, shift, interpolation="nearest", inverse=True)
    assert np.array_equal(from_sitk(back).data, data)
    ringing = from_sitk(resample(img, img, sitk.TranslationTransform(3, (0.7, 0.3, 0.0)))).data
    assert ringing.min() >= 0.0 and ringing.max() <= 100.0  # B-spline clamped to the input range
    with pytest.raises(ValueError, match="interpolation"):
        resample(img, img, shift, interpolation="cubic")


@pytest.mark.slow
@pytest.mark.parametrize("study", ["study1", "study2"])
def test_longitudinal_patient_recovers_a_known_move(shared_data: Path, study: str):
    """Move T1W by 10-12 degrees and 10-12 mm, register it onto FLAIR, undo the move: the result agrees
    with the upstream T1W->FLAIR transform within 1 mm on average over the head; no registration does not."""
    folder = shared_data / "longitudinal" / "raw" / "patient01"
    flair = sitk.ReadImage(str(folder / f"{study}_FLAIR.nii.gz"))
    t1 = sitk.ReadImage(str(folder / f"{study}_T1W.nii.gz"))
    upstream = read_transform(folder / f"{study}_T1W_intrastudy_to_FLAIR.txt")
    head = from_sitk(sitk.OtsuThreshold(flair, 0, 1)).data > 0
    move = rigid_matrix((12, -8, 10), (12, -10, 8), _centre(t1))
    found = register(flair, move_image(t1, move), PrepareConfig().registration)  # what prepare runs
    undone = np.linalg.inv(move) @ transform_matrix(found)
    assert mean_displacement(undone, upstream, flair, head) <= 1.0
    assert mean_displacement(np.linalg.inv(move), upstream, flair, head) > 10.0  # skipping registration


def test_synthetic_subject_misaligned_by_a_random_rigid_transform(tmp_path: Path):
    """A 2 mm phantom subject (own bias field per modality): T1w moved by a random rigid transform is
    registered back onto FLAIR within one voxel (2 mm) of mean displacement over the brain."""
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    write_cohort(tmp_path, PhantomConfig(resolution_mm=2, lesions_min=8, lesions_max=8), 1, seed=3)
    anat = tmp_path / "sub-001" / "anat"
    flair = sitk.ReadImage(str(anat / "sub-001_FLAIR.nii.gz"))
    t1 = sitk.ReadImage(str(anat / "sub-001_T1w.nii.gz"))
    rng = np.random.default_rng(11)
    angles = rng.uniform(5, 10, 3) * rng.choice([-1, 1], 3)
    shift = rng.uniform(5, 10, 3) * rng.choice([-1, 1], 3)
    move = rigid_matrix(angles, shift, _centre(t1))
    found = register(flair, move_image(t1, move), RegistrationConfig(stages=("rigid",)))
    brain = from_sitk(flair).data > 0
    assert mean_displacement(found, move, flair, brain) <= 2.0
