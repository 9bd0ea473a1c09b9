"""A network runs at the voxel size it was trained at (issue 30): resampling to the model's grid and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gdfree.infer.grid import model_grid_shape, on_model_grid, resample_channels

PRETRAINED = Path(__file__).resolve().parents[2] / "src" / "gdfree" / "pretrained" / "network"


def test_same_spacing_runs_as_it_is_and_another_goes_there_and_back():
    image = np.random.default_rng(0).normal(size=(2, 12, 10, 8)).astype(np.float32)
    seen = []

    def run(img: np.ndarray, brain: np.ndarray | None) -> np.ndarray:
        seen.append(img.shape)
        return img[:1] * 2

    assert np.array_equal(on_model_grid(run, image, None, (1.0, 1.0, 1.0), (1.01, 1.0, 0.99)), image[:1] * 2)
    assert np.array_equal(on_model_grid(run, image, None, None, (2.0, 2.0, 2.0)), image[:1] * 2)
    brain = np.zeros(image.shape[1:], bool)
    brain[2:10, 2:8, 2:6] = True
    out = on_model_grid(run, image, brain, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), margin=1)
    assert seen[-1] == (2, 5, 4, 3)  # the box (10 x 8 x 6 exam voxels) at 2 mm
    assert out.shape == (1, 12, 10, 8) and not out[:, 0].any() and not out[:, :, :, 7].any()  # 0 outside


def test_a_constant_survives_the_round_trip_and_shapes_follow_the_voxel_size():
    assert model_grid_shape((181, 217, 181), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)) == (90, 108, 90)
    assert model_grid_shape((3, 3, 3), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)
    flat = np.full((1, 8, 8, 8), 0.3, np.float32)
    assert np.allclose(resample_channels(resample_channels(flat, (4, 4, 4)), (8, 8, 8)), 0.3)


@pytest.fixture(scope="module")
def two_mm_case(tmp_path_factory: pytest.TempPathFactory):
    from gdfree.data.cases import load_array_case
    from gdfree.io.adapters import discover
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    root = tmp_path_factory.mktemp("grid")
    write_cohort(root, PhantomConfig(resolution_mm=2), 1, seed=3, first=300)
    return load_array_case(discover(root)[0], ("T1w", "T2w", "FLAIR"), ("lesion",))


def test_a_2mm_model_finds_the_same_lesions_on_a_1mm_copy_of_a_2mm_case(two_mm_case):
    """The shipped model was trained at 2 mm: on a 1 mm copy of a 2 mm exam it now runs at 2 mm and marks the
    lesions it marks on the 2 mm exam (before, it ran at 1 mm and saw every lesion at twice its size)."""
    from scipy import ndimage

    from gdfree.infer.model import TrainedModel
    from gdfree.metrics import DetectionRule, match_lesions

    def copy_1mm(a: np.ndarray) -> np.ndarray:
        return ndimage.zoom(a, 2, order=0, grid_mode=True, mode="grid-constant")

    model = TrainedModel.load(PRETRAINED)
    assert model.spacing_mm == (2.0, 2.0, 2.0)
    case, one = two_mm_case, (1.0, 1.0, 1.0)
    at_2mm = model.masks({"lesion": model.probabilities(case.image, brain=case.brain,
                                                          spacing_mm=case.spacing_mm)[1]}, case.spacing_mm)["lesion"]
    truth = copy_1mm(at_2mm.astype(np.uint8)) > 0
    fine, fine_brain = np.stack([copy_1mm(c) for c in case.image]), copy_1mm(case.brain.astype(np.uint8)) > 0
    at_1mm = model.masks({"lesion": model.probabilities(fine, brain=fine_brain, spacing_mm=one)[1]}, one)["lesion"]
    blind = model.masks({"lesion": model.probabilities(fine, brain=fine_brain)[1]}, one)["lesion"]
    rule = DetectionRule.preset("any")
    found, before = match_lesions(at_1mm, truth, one, rule), match_lesions(blind, truth, one, rule)
    dice = 2 * (at_1mm & truth).sum() / (at_1mm.sum() + truth.sum())
    assert found.n_ref >= 10 and found.sensitivity == found.precision == 1.0 and dice >= 0.9, (found.summary(), dice)
    assert before.f1 < 0.8  # at the exam's voxel size (measured: lesion F1 0.65, Dice 0.62)
