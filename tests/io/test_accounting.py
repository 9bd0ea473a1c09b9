"""Every folder that looks like a case is a case or is named with its reason (issue 33: cases dropped
without a word by info, prepare and predict)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.accounting import NOT_CASES, not_cases

runner = CliRunner()

ODD = {  # folder -> (what its files are called, a phrase of the reason, the rename offered)
    "sub-01_baseline": ("sub-01_baseline", "not a BIDS subject folder name", "sub-01baseline"),
    "sub-P 01": ("sub-P 01", "not a BIDS subject folder name", "sub-P01"),
    "sub-01-a": ("sub-01-a", "not a BIDS subject folder name", "sub-01a"),
    "sub-Müller": ("sub-Müller", "not a BIDS subject folder name", "sub-Muller"),
    "Sub-02": ("Sub-02", "not a BIDS subject folder name", "sub-02"),
}


@pytest.fixture()
def odd_dataset(tiny_cohort: Path, tmp_path: Path) -> Path:
    """The tiny cohort (three good subjects) plus the folders users really have: labels that are not BIDS,
    images outside anat/, a stray file in a good subject's anat/."""
    root = tmp_path / "ds"
    shutil.copytree(tiny_cohort, root)
    good = sorted((root / "sub-001" / "anat").glob("sub-001_*.nii.gz"))
    for folder, (stem, _, _) in ODD.items():
        (root / folder / "anat").mkdir(parents=True)
        for f in good:
            shutil.copy(f, root / folder / "anat" / f.name.replace("sub-001", stem))
    (root / "sub-03").mkdir()
    for f in good:
        shutil.copy(f, root / "sub-03" / f.name.replace("sub-001", "sub-03"))
    shutil.copy(good[0], root / "sub-001" / "anat" / "FLAIR copy.nii.gz")
    return root


def test_every_folder_that_looks_like_a_case_is_named_with_its_reason(odd_dataset: Path):
    found = {n.path: n.reason for n in not_cases(odd_dataset)}
    assert set(found) == {*ODD, "sub-03", "sub-001/anat/FLAIR copy.nii.gz"}
    for folder, (_, why, rename) in ODD.items():
        assert why in found[folder] and f"rename it to {rename}" in found[folder]
    assert "outside sub-03/anat/" in found["sub-03"]
    assert "not a BIDS file name" in found["sub-001/anat/FLAIR copy.nii.gz"]


def test_info_lists_them_and_exits_1(odd_dataset: Path):
    result = runner.invoke(app, ["info", str(odd_dataset), "--quick"])
    assert result.exit_code == 1, result.output
    assert "3 cases" in result.output and "7 folders or files" in result.output
    assert "not a case: sub-01_baseline:" in result.output and "not a case: sub-03:" in result.output


def test_info_on_a_dataset_of_only_such_folders_is_not_a_quiet_zero(tmp_path: Path, odd_dataset: Path):
    only = tmp_path / "only"
    (only / "sub-01_baseline").mkdir(parents=True)
    shutil.copytree(odd_dataset / "sub-01_baseline", only / "sub-01_baseline", dirs_exist_ok=True)
    result = runner.invoke(app, ["info", str(only), "--quick"])
    assert result.exit_code == 1 and "0 cases" in result.output and "sub-01baseline" in result.output


def test_prepare_lists_them_beside_its_failures_and_exits_1(odd_dataset: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["prepare", str(odd_dataset), "--out", str(out), "--no-register", "--no-n4",
                                 "--brain-mask", "provided"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "prepared 3" in result.output and "not a case: sub-P 01:" in result.output
    listed = (out / NOT_CASES).read_text()
    assert "sub-Müller" in listed and "sub-03" in listed


def test_predict_on_such_a_folder_says_why_there_is_no_case(odd_dataset: Path, tmp_path: Path):
    from gdfree.demo import PRETRAINED

    for folder in ("sub-01_baseline", "Sub-02", "sub-03"):
        result = runner.invoke(app, ["predict", "--model", str(PRETRAINED / "network"), "--input",
                                     str(odd_dataset / folder), "--out", str(tmp_path / f"pred-{folder}")])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "no case found" in result.output and f"{folder}:" in result.output


def test_import_renames_unusual_labels_into_valid_bids_and_keeps_the_mapping(odd_dataset: Path, tmp_path: Path):
    import csv

    from gdfree.io.adapters import discover

    dest = tmp_path / "bids"
    result = runner.invoke(app, ["import", str(odd_dataset), str(dest)])
    assert result.exit_code == 0, result.output
    subjects = {c.subject: sorted(c.images) for c in discover(dest)}
    assert set(subjects) == {"001", "002", "003", "01baseline", "P01", "01a", "Muller", "02"}
    assert subjects["01baseline"] == subjects["001"]
    with (dest / "import.tsv").open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    mapping = {r["case"]: r["renamed_from"] for r in rows if r["renamed_from"]}
    assert mapping == {f"sub-{rename[4:]}": folder for folder, (_, _, rename) in ODD.items()}
    assert all(Path(r["source"]).is_file() and "gdfree-import-" not in r["source"] for r in rows)
    assert runner.invoke(app, ["info", str(dest), "--quick"]).exit_code == 0  # every folder a case now
    clash = tmp_path / "clash"  # two folders that would get one name: refused, naming both
    shutil.copytree(odd_dataset, clash)
    shutil.copytree(clash / "sub-01-a", clash / "sub-01_a")
    refused = runner.invoke(app, ["import", str(clash), str(tmp_path / "b2")])
    assert refused.exit_code == 2 and "sub-01a" in refused.output and "rename one of them" in refused.output
