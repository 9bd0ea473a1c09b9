from __future__ import annotations

import numpy as np
import pytest

from gdfree.errors import GridMismatchError, InputRoleError, MissingModalityError
from gdfree.types import Case, Volume, canonical_modality, check_input_modalities
from tests.conftest import oblique_affine


def _vol(shape=(4, 5, 6), spacing=(1.0, 1.0, 3.0), value=1.0) -> Volume:
    return Volume(np.full(shape, value, np.float32), np.diag([*spacing, 1.0]))


def test_volume_spacing_and_voxel_volume_on_oblique_grid():
    vol = Volume(np.zeros((3, 4, 5)), oblique_affine((0.7, 0.9, 3.0)))
    assert vol.spacing_mm == pytest.approx((0.7, 0.9, 3.0))
    assert vol.voxel_volume_mm3 == pytest.approx(0.7 * 0.9 * 3.0)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 6, 2)])
def test_volume_rejects_non_3d(shape):
    with pytest.raises(ValueError, match="3-D"):
        Volume(np.zeros(shape), np.eye(4))


def test_volume_rejects_singular_affine():
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_aliases_map_to_roles():
    assert [canonical_modality(m) for m in ("t1", "MPRAGE", "flair", "DP", "T1POST", "gado")] == [
        "T1w", "T1w", "FLAIR", "PD", "T1gd", "T1gd",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not known"):
        canonical_modality("dwi")


def test_post_contrast_input_refused_outside_oracle():
    with pytest.raises(InputRoleError, match="oracle"):
        check_input_modalities(["FLAIR", "T1POST"])
    assert check_input_modalities(["FLAIR", "T1gd"], oracle=True) == ("FLAIR", "T1gd")


def test_input_array_stacks_and_checks():
    case = Case("01", None, {"T1w": _vol(value=1), "FLAIR": _vol(value=2), "T1gd": _vol(value=3)})
    arr = case.input_array(["flair", "t1"])
    assert arr.shape == (2, 4, 5, 6) and arr.dtype == np.float32
    assert arr[0].max() == 2 and arr[1].max() == 1
    with pytest.raises(InputRoleError):
        case.input_array(["T1gd"])
    with pytest.raises(MissingModalityError, match="sub-01: missing T2w"):
        case.input_array(["T2w"])


def test_grid_mismatch_names_both_images():
    case = Case("01", "a", {"T1w": _vol(), "FLAIR": _vol(spacing=(1.0, 1.0, 2.0))})
    with pytest.raises(GridMismatchError, match=r"sub-01_ses-a: FLAIR .* not on the grid of T1w"):
        case.input_array(["T1w", "FLAIR"])
