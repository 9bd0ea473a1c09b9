"""Challenge layouts on generated trees with the published file names; conversion to BIDS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.adapters import discover
from gdfree.io.images import read_volume
from gdfree.io.importer import import_dataset

runner = CliRunner()


def _write(path: Path, value: float = 1.0, spacing: tuple[float, float, float] = (1.0, 1.0, 1.2)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((6, 7, 8), np.float32)
    data[2:4, 2:5, 3:6] = value
    img = sitk.GetImageFromArray(data)
    img.SetSpacing(spacing)
    img.SetOrigin((10.0, -20.0, 5.0))
    sitk.WriteImage(img, str(path))


def _miccai2008(root: Path) -> None:
    for case, lesion in (("CHB_train_Case01", True), ("UNC_train_Case03", True), ("CHB_test1_Case13", False)):
        for mod in ("FLAIR", "T1", "T2", *(["lesion"] if lesion else [])):
            _write(root / case / f"{case}_{mod}.nhdr")


def _isbi2015(root: Path) -> None:
    for sub, ses in (("01", "01"), ("01", "02"), ("02", "01")):
        for mod in ("flair", "mprage", "pd", "t2"):
            _write(root / "training" / f"training{sub}" / "preprocessed" / f"training{sub}_{ses}_{mod}_pp.nii")
        for rater in (1, 2):
            _write(root / "training" / f"training{sub}" / "masks" / f"training{sub}_{ses}_mask{rater}.nii", rater)


def _msseg2016(root: Path) -> None:
    for centre, patient in (("01", "01"), ("01", "02"), ("07", "01")):
        case = root / "Training" / f"Center_{centre}" / f"Patient_{patient}"
        for mod in ("FLAIR", "T1", "T2", "DP", "GADO"):
            _write(case / "Preprocessed_Data" / f"{mod}_preprocessed.nii.gz")
        for mask in ("Consensus", "Brain_Mask", "ManualSegmentation_1", "ManualSegmentation_2"):
            _write(case / "Masks" / f"{mask}.nii.gz")


def _shifts2022(root: Path) -> None:
    for cohort, split, ids in (("msseg", "train", (1, 2)), ("best", "dev_in", (6,))):
        base = root / "shifts_ms_pt1" / cohort / split
        for i in ids:
            for mod, folder in (("FLAIR", "flair"), ("T1", "t1"), ("T2", "t2"), ("PD", "pd"), ("gt", "gt")):
                _write(base / folder / f"{i}_{mod}_isovox.nii.gz")
            _write(base / "fg_mask" / f"{i}_isovox_fg_mask.nii.gz")


LAYOUTS = {
    "miccai2008": (_miccai2008, ["CHBtest1Case13", "CHBtrainCase01", "UNCtrainCase03"],
                   {"FLAIR", "T1w", "T2w"}),
    "isbi2015": (_isbi2015, ["sub-training01_ses-01", "sub-training01_ses-02", "sub-training02_ses-01"],
                 {"FLAIR", "T1w", "T2w", "PD"}),
    "msseg2016": (_msseg2016, ["center01patient01", "center01patient02", "center07patient01"],
                  {"FLAIR", "T1w", "T2w", "PD", "T1gd"}),
    "shifts2022": (_shifts2022, ["bestdevin6", "mssegtrain1", "mssegtrain2"], {"FLAIR", "T1w", "T2w", "PD"}),
}  # fmt: skip


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_layout_is_read_by_name_and_detected(tmp_path: Path, fmt: str):
    make, expected, roles = LAYOUTS[fmt]
    make(tmp_path / "src")
    cases = discover(tmp_path / "src", fmt)
    ids = sorted(c.case_id if c.session else c.subject for c in cases)
    assert ids == sorted(expected)
    assert all(set(c.images) == roles for c in cases)
    assert [c.subject for c in discover(tmp_path / "src")] == [c.subject for c in cases]  # auto-detected
    with_lesion = [c for c in cases if "lesion" in c.masks]
    assert len(with_lesion) == (2 if fmt == "miccai2008" else len(cases))
    if fmt == "isbi2015":
        assert all(c.masks["lesion"].name.endswith("mask1.nii") and set(c.extra["lesion_raters"]) == {1, 2}
                   for c in cases)  # fmt: skip
    if fmt in ("msseg2016", "shifts2022"):
        assert all("brain" in c.masks for c in cases)


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_import_to_bids_keeps_voxels_and_geometry(tmp_path: Path, fmt: str):
    make, _, roles = LAYOUTS[fmt]
    make(tmp_path / "src")
    result = runner.invoke(app, ["import", str(tmp_path / "src"), str(tmp_path / "bids"), "--format", fmt])
    assert result.exit_code == 0, result.output
    source = {c.case_id: c for c in discover(tmp_path / "src", fmt)}
    converted = discover(tmp_path / "bids")
    assert {c.case_id for c in converted} == set(source)
    for case in converted:
        assert set(case.images) == roles and not case.problems
        src_case = source[case.case_id]
        assert set(case.masks) == set(src_case.masks)
        for role, path in case.images.items():
            a, b = read_volume(path), read_volume(src_case.images[role])
            assert np.array_equal(a.data, b.data) and np.allclose(a.affine, b.affine)
    assert (tmp_path / "bids" / "import.tsv").is_file()
    again = runner.invoke(app, ["import", str(tmp_path / "src"), str(tmp_path / "bids"), "--format", fmt])
    assert again.exit_code == 2 and "not empty" in again.output


def test_unknown_tree_names_the_layouts(tmp_path: Path):
    _write(tmp_path / "whatever" / "scan.nii.gz")
    with pytest.raises(ValueError, match="msseg2016"):
        discover(tmp_path / "whatever")
    with pytest.raises(ValueError, match="no isbi2015 case"):
        import_dataset(tmp_path / "whatever", tmp_path / "out", "isbi2015")
