from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gdfree.errors import ImageReadError
from gdfree.io.images import atomic_path, read_volume, write_volume
from gdfree.types import Volume
from tests.conftest import oblique_affine


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_nifti_round_trip_keeps_affine_dtype_and_codes(tmp_path: Path, suffix: str, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random((7, 6, 5)) * 100).astype(dtype)
    vol = Volume(data, oblique_affine((0.7, 0.9, 3.0)), qform_code=1, sform_code=4)
    back = read_volume(write_volume(vol, tmp_path / f"img{suffix}"))
    assert back.data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    assert (back.qform_code, back.sform_code) == (1, 4)
    hdr = nib.load(tmp_path / f"img{suffix}").header
    np.testing.assert_allclose(hdr.get_qform(), vol.affine, atol=1e-5)  # rotation + anisotropy fit a qform


def test_bool_mask_written_as_uint8(tmp_path: Path):
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    back = read_volume(write_volume(Volume(mask, np.eye(4)), tmp_path / "m.nii.gz"))
    assert back.data.dtype == np.uint8 and back.data.sum() == 8


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_round_trip_keeps_world_geometry(tmp_path: Path, suffix: str):
    data = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)
    vol = Volume(data, oblique_affine((0.7, 0.9, 3.0)))
    back = read_volume(write_volume(vol, tmp_path / f"img{suffix}"))
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_nifti_and_nrrd_agree_on_world_coordinates(tmp_path: Path):
    """The same image written as NIfTI and NRRD reads back with one affine (RAS+ both)."""
    vol = Volume(np.ones((3, 4, 5), np.float32), oblique_affine((1.0, 2.0, 3.0)))
    a = read_volume(write_volume(vol, tmp_path / "a.nii.gz"))
    b = read_volume(write_volume(vol, tmp_path / "b.nrrd"))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)


def test_trailing_singleton_dimension_is_dropped(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 1), np.float32), np.eye(4)), tmp_path / "x.nii.gz")
    assert read_volume(tmp_path / "x.nii.gz").shape == (4, 5, 6)


@pytest.mark.parametrize(("shape", "match"), [((4, 5, 6, 3), "4-D"), ((4, 5), "2-D")])
def test_non_3d_images_are_refused_with_the_file_name(tmp_path: Path, shape, match):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), path)
    with pytest.raises(ImageReadError, match=rf"bad\.nii\.gz: expected a 3-D volume, got {match}"):
        read_volume(path)


def test_truncated_gzip_is_refused_with_the_file_name(tmp_path: Path):
    good = write_volume(Volume(np.random.default_rng(0).random((20, 20, 20)), np.eye(4)), tmp_path / "g.nii.gz")
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=r"truncated\.nii\.gz: cannot read NIfTI data"):
        read_volume(bad)


def test_not_gzip_and_garbage_are_refused(tmp_path: Path):
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(b"this is not gzip at all" * 20)
    with pytest.raises(ImageReadError, match=r"fake\.nii\.gz"):
        read_volume(fake)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"\0" * 10)
    with pytest.raises(ImageReadError, match=r"junk\.nii"):
        read_volume(junk)


def test_missing_file_and_unknown_format(tmp_path: Path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(ImageReadError, match="unknown image format"):
        read_volume(tmp_path / "x.png")


def test_failed_write_leaves_the_old_file_untouched(tmp_path: Path):
    target = tmp_path / "keep.nii.gz"
    write_volume(Volume(np.ones((2, 2, 2), np.float32), np.eye(4)), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]
