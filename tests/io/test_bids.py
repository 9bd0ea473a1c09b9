from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gdfree.errors import GridMismatchError, MissingModalityError
from gdfree.io.adapters import discover
from gdfree.io.bids import discover_bids, load_case, parse_entities
from gdfree.io.images import write_volume
from gdfree.io.report import describe_dataset
from gdfree.types import Volume


def _img(path: Path, shape=(6, 6, 6), spacing=2.0) -> None:
    write_volume(Volume(np.ones(shape, np.float32), np.diag([spacing] * 3 + [1.0])), path)


@pytest.fixture
def bids_tree(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    a = root / "sub-01" / "ses-1" / "anat"
    for name in ("T1w", "T2w", "FLAIR", "ce-gadolinium_T1w", "run-2_T1w"):
        _img(a / f"sub-01_ses-1_{name}.nii.gz")
    _img(root / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_FLAIR.nii.gz")
    _img(root / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    _img(root / "sub-02" / "anat" / "sub-02_FLAIR.nii.gz", shape=(5, 6, 6))
    d = root / "derivatives" / "manual" / "sub-01" / "ses-1" / "anat"
    _img(d / "sub-01_ses-1_label-lesion_mask.nii.gz")
    _img(d / "sub-01_ses-1_label-enhancing_mask.nii.gz")
    _img(d / "sub-01_ses-1_desc-brain_mask.nii.gz")
    _img(d / "sub-01_ses-1_desc-other_mask.nii.gz")
    return root


def test_parse_entities():
    assert parse_entities("sub-01_ses-2_ce-gadolinium_T1w.nii.gz") == {
        "sub": "01", "ses": "2", "ce": "gadolinium", "suffix": "T1w", "extension": ".nii.gz",
    }  # fmt: skip
    assert parse_entities("notbids_T1w.nii.gz") is None
    assert parse_entities("sub-01_bad_T1w.nii") is None


def test_discover_bids_finds_roles_sessions_and_masks(bids_tree: Path):
    cases = {c.case_id: c for c in discover_bids(bids_tree)}
    assert sorted(cases) == ["sub-01_ses-1", "sub-01_ses-2", "sub-02"]
    s1 = cases["sub-01_ses-1"]
    assert sorted(s1.images) == ["FLAIR", "T1gd", "T1w", "T2w"]
    assert s1.images["T1gd"].name == "sub-01_ses-1_ce-gadolinium_T1w.nii.gz"
    assert sorted(s1.masks) == ["brain", "enhancing", "lesion"]
    assert any("several T1w" in p for p in s1.problems)  # run-2 duplicate reported, not silently dropped
    assert cases["sub-01_ses-2"].missing(["T1w", "FLAIR"]) == ["T1w"]


def test_load_case_reads_masks_as_bool_and_requires(bids_tree: Path):
    files = {c.case_id: c for c in discover(bids_tree)}
    case = load_case(files["sub-01_ses-1"])
    assert case.masks["lesion"].data.dtype == np.bool_
    with pytest.raises(MissingModalityError, match="sub-01_ses-2: missing required T1w"):
        load_case(files["sub-01_ses-2"], required=["T1w", "FLAIR"])


def test_load_case_refuses_modalities_on_different_grids(bids_tree: Path):
    files = {c.case_id: c for c in discover(bids_tree)}["sub-02"]
    with pytest.raises(
        GridMismatchError, match=r"sub-02_T1w\.nii\.gz.*not on the grid of FLAIR .*sub-02_FLAIR\.nii\.gz"
    ):
        load_case(files)
    assert load_case(files, require_same_grid=False).images["FLAIR"].shape == (5, 6, 6)


def test_report_lists_missing_and_grid_problems(bids_tree: Path):
    rows = {r.case_id: r for r in describe_dataset(bids_tree, "auto", ("T1w", "FLAIR"))}
    assert rows["sub-01_ses-2"].problems == ["missing required T1w"]
    assert any("another grid" in p for p in rows["sub-02"].problems)


def test_discover_synthetic_cohort(tiny_cohort: Path):
    cases = discover(tiny_cohort)
    assert [c.case_id for c in cases] == ["sub-001", "sub-002", "sub-003"]
    for c in cases:
        assert sorted(c.images) == ["FLAIR", "PD", "T1gd", "T1w", "T2w"]
        assert sorted(c.masks) == ["brain", "enhancing", "lesion"]
        assert c.problems == []
        load_case(c)  # all on one grid


def test_open_ms_data_cross_sectional_and_longitudinal(shared_data: Path):
    cases = {c.case_id: c for c in discover(shared_data)}
    p07 = cases["sub-patient07"]
    assert sorted(p07.images) == ["FLAIR", "T1gd", "T1w", "T2w"]
    assert p07.images["T1gd"].name.startswith("T1POST_")
    assert p07.masks["lesion"].name.startswith("GOLD_STANDARD_")
    assert sum(c.source == "open_ms_data:MNI" for c in cases.values()) == 20
    long = [c for c in cases.values() if c.source == "open_ms_data:longitudinal"]
    # two studies per longitudinal patient (patient01, and more as the shared data grows)
    assert [c.case_id for c in long][:2] == ["sub-longpatient01_ses-study1", "sub-longpatient01_ses-study2"]
    subjects = {c.subject for c in long}
    expected = [(s, t) for s in sorted(subjects) for t in ("study1", "study2")]
    assert sorted((c.subject, c.session) for c in long) == expected
    assert set(long[0].extra["to_FLAIR_tfm"]) == {"T1w", "T2w"}
    with pytest.raises(GridMismatchError, match="study1_"):
        load_case(long[0])  # native space: each modality on its own grid


@pytest.mark.shared
def test_open_ms_data_patient07_loads_on_one_grid(shared_data: Path):
    files = {c.case_id: c for c in discover(shared_data / "cross_sectional")}["sub-patient07"]
    case = load_case(files, modalities=["FLAIR"], masks=["lesion"])
    assert case.images["FLAIR"].shape == (182, 218, 182)
    assert 1000 < case.masks["lesion"].data.sum() < 2000  # 1.3 ml consensus, README


def test_report_flags_a_4d_image(bids_tree: Path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6, 3), np.float32), np.diag([2.0, 2, 2, 1])),
             bids_tree / "sub-02" / "anat" / "sub-02_T2w.nii.gz")  # fmt: skip
    quick = {r.case_id: r for r in describe_dataset(bids_tree, quick=True)}  # headers only
    assert any("T2w: 4-D image of shape (6, 6, 6, 3)" in p for p in quick["sub-02"].problems)
    rows = {r.case_id: r for r in describe_dataset(bids_tree)}
    assert any("sub-02_T2w.nii.gz: expected a 3-D volume, got 4-D" in p for p in rows["sub-02"].problems)
    assert rows["sub-02"].unusable and quick["sub-02"].unusable
