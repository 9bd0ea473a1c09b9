"""``gdfree import`` of DICOM series (written here with pydicom) through dcm2niix, roles by the rule file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.adapters import discover
from gdfree.io.dicom import load_rules, match_role
from gdfree.io.images import read_volume

pydicom = pytest.importorskip("pydicom")


def write_series(folder: Path, number: int, description: str, data: np.ndarray, patient: str = "PAT-7",
                 spacing: tuple[float, float, float] = (1.0, 1.0, 2.0), date: str = "20240102") -> None:  # fmt: skip
    """An axial MR series, one file per slice, (rows, columns, slices) = data.shape."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    series_uid, study_uid, frame = generate_uid(), "1.2.826.0.1.3680043.8.498.1", generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{number}_{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", "SIEMENS", 3
        ds.PatientID, ds.PatientName, ds.StudyDate, ds.SeriesDate = patient, "Test^Case", date, date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = "101010"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = number, k + 1, 1
        ds.SeriesDescription = ds.ProtocolName = description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.EchoTime, ds.RepetitionTime, ds.FlipAngle = 10, 500, 90
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, -12.0, k * spacing[2]]
        ds.SliceLocation = k * spacing[2]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = data.shape[0], data.shape[1]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(data[:, :, k].astype(np.uint16)).tobytes()
        ds.save_as(folder / f"{number}_{k}.dcm", enforce_file_format=True)


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(100, 1000, size=(12, 10, 5))).astype(np.uint16)


def test_a_tiny_dicom_exam_imports_to_the_right_roles(tmp_path: Path):
    src = tmp_path / "dicom"
    flair, post = _volume(1), _volume(2)
    write_series(src / "a", 3, "AX FLAIR", flair)
    write_series(src / "b", 5, "T1 MPRAGE POST GD", post)
    write_series(src / "c", 4, "T1 MPRAGE", _volume(3))
    write_series(src / "d", 1, "3-plane localizer", _volume(4))
    write_series(src / "e", 6, "AX DWI b1000", _volume(5))
    src.chmod(0o555)
    dest = tmp_path / "bids"
    run = CliRunner().invoke(app, ["import", str(src), str(dest)])
    assert run.exit_code == 0, run.output
    assert "imported 3 of 5 series, 1 exams" in run.output
    (case,) = discover(dest)
    assert case.subject == "PAT7" and set(case.images) == {"FLAIR", "T1gd", "T1w"}
    assert case.images["T1gd"].name == "sub-PAT7_ce-gadolinium_T1w.nii.gz"
    sidecar = json.loads(case.images["FLAIR"].with_name("sub-PAT7_FLAIR.json").read_text())
    assert sidecar["SeriesDescription"] == "AX FLAIR" and sidecar["gdfreeRole"] == "FLAIR"
    assert "PatientName" not in sidecar  # dcm2niix's anonymised sidecar
    # the voxels are the DICOM's, whatever orientation dcm2niix chose for the file
    image = read_volume(case.images["FLAIR"])
    assert image.shape == (10, 12, 5) or sorted(image.shape) == sorted(flair.shape)
    assert sorted(np.asarray(image.data).ravel().astype(int)) == sorted(flair.ravel().astype(int))
    assert np.allclose(sorted(image.spacing_mm), [1.0, 1.0, 2.0])
    table = (dest / "import.tsv").read_text()
    assert "localizer" in table and "ignored" in table and "DWI" in table
    assert not list(dest.glob(".gdfree-dcm2niix-*"))  # the temporary conversion folder is gone
    src.chmod(0o755)


def test_import_goes_on_past_a_bad_series_and_says_why(tmp_path: Path):
    src = tmp_path / "dicom"
    write_series(src / "a", 2, "t1_mprage", _volume(0))
    write_series(src / "b", 3, "flair", _volume(1))
    write_series(src / "c", 4, "t2_tse", _volume(2))
    for f in sorted((src / "b").glob("*.dcm")):  # the FLAIR series truncated: its pixel data is cut short
        f.write_bytes(f.read_bytes()[:-60])
    dest = tmp_path / "bids"
    run = CliRunner().invoke(app, ["import", str(src), str(dest), "--format", "dicom"])
    assert run.exit_code == 1, run.output
    assert "T1w -> " in run.output and "T2w -> " in run.output and "not large enough" in run.output
    rows = (dest / "import.tsv").read_text(encoding="utf-8")
    assert "3_0.dcm" in rows and "dcm2niix (exit" in rows
    assert {c.case_id: sorted(c.images) for c in discover(dest)} == {"sub-PAT7": ["T1w", "T2w"]}
    only_bad = tmp_path / "only_bad"  # nothing convertible: a clear error and no empty destination
    (only_bad / "b").mkdir(parents=True)
    for f in (src / "b").glob("*.dcm"):
        (only_bad / "b" / f.name).write_bytes(f.read_bytes())
    run = CliRunner().invoke(app, ["import", str(only_bad), str(tmp_path / "none"), "--format", "dicom"])
    assert run.exit_code == 2 and "converted no series" in run.output and "not large enough" in run.output
    assert not (tmp_path / "none").exists()


def test_rules_are_editable_and_checked(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - role: FLAIR\n    match: {SeriesDescription: 'dark'}\n"
                     "  - role: T1gd\n    match: {SeriesDescription: 'site-t1-contrast'}\n")  # fmt: skip
    loaded = load_rules(rules)
    assert match_role({"SeriesDescription": "AX DARK FLUID"}, loaded)[0] == "FLAIR"
    assert match_role({"SeriesDescription": "site-T1-contrast"}, loaded) == ("T1gd", "rule 2")
    assert match_role({"SeriesDescription": "AX FLAIR"}, loaded) == (None, "no rule matched")
    default = load_rules()
    for description, role in (("Ax T1 post-contrast", "T1gd"), ("T1_MPRAGE_pre", "T1w"), ("t2_tse_tra", "T2w"),
                              ("T2 FLAIR SPACE", "FLAIR"), ("T1 SE +C", "T1gd"), ("sag T1", "T1w")):  # fmt: skip
        assert match_role({"SeriesDescription": description}, default)[0] == role, description
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - role: T3w\n    match: {SeriesDescription: x}\n")
    with pytest.raises(ValueError, match="role"):
        load_rules(bad)
    bad.write_text("rules:\n  - role: T1w\n    match: {SeriesDescription: '(['}\n")
    with pytest.raises(ValueError, match="regular expression"):
        load_rules(bad)
    bad.write_text("ignore:\n  - SeriesDescription: 'scout|(['\n"
                   "rules:\n  - role: T1w\n    match: {SeriesDescription: t1}\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"bad.yaml: ignore entry 1, SeriesDescription: bad regular expression"):
        load_rules(bad)
    bad.write_text("just some words, not a rule file\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no dicom here")
    args = ["import", str(empty), str(tmp_path / "o2"), "--format", "dicom", "--rules", str(bad)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 2 and "bad.yaml: expected a YAML mapping" in run.output
    run = CliRunner().invoke(app, ["import", str(empty), str(tmp_path / "out"), "--format", "dicom"])
    assert run.exit_code == 2 and "no DICOM files" in run.output
    shown = CliRunner().invoke(app, ["dicom-rules"])
    assert shown.exit_code == 0 and "role: FLAIR" in shown.output
