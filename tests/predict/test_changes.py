"""``gdfree predict --prior``: sessions paired in order, what changed written beside the follow-up."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.demo import PRETRAINED
from gdfree.io.images import read_mask, read_volume, to_sitk
from gdfree.preprocess.registration import mean_displacement, read_transform

runner = CliRunner()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_predict_with_prior_writes_changes_on_the_followup_grid(pair_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", "--model", str(PRETRAINED / "network"), "--input", str(pair_cohort),
                                 "--out", str(out), "--prior"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (pair,) = _rows(out / "pairs.tsv")
    assert (pair["subject"], pair["prior"], pair["followup"], pair["status"]) == ("001", "1", "2", "ok")
    anat = out / "sub-001" / "ses-2" / "anat"
    truth = pair_cohort / "derivatives" / "phantom" / "sub-001"
    flair = read_volume(pair_cohort / "sub-001" / "ses-2" / "anat" / "sub-001_ses-2_FLAIR.nii.gz")
    change = read_volume(truth / "ses-2" / "anat" / "sub-001_ses-2_desc-change_dseg.nii.gz").data
    move = np.asarray(json.loads((truth / "ses-1" / "anat" / "sub-001_ses-1_phantom.json").read_text())
                      ["followup_to_prior_lps"])  # fmt: skip
    brain = read_mask(truth / "ses-2" / "anat" / "sub-001_ses-2_desc-brain_mask.nii.gz").data
    assert mean_displacement(read_transform(anat / "sub-001_ses-2_from-1_xfm.txt"), move, to_sitk(flair), brain) < 1.0
    dseg = read_volume(anat / "sub-001_ses-2_desc-change_dseg.nii.gz")
    lesions = read_mask(anat / "sub-001_ses-2_desc-lesion_mask.nii.gz").data
    assert dseg.shape == flair.shape and np.allclose(dseg.affine, flair.affine)
    assert set(np.unique(dseg.data)) <= {0, 1, 2, 3, 4} and ((dseg.data > 0) == lesions).all()
    rows = _rows(anat / "sub-001_ses-2_changes.tsv")
    assert len(rows) == int(pair["n_lesions"]) > 0
    assert {r["status"] for r in rows} <= {"new", "enlarging", "stable", "shrinking"}
    found = read_mask(anat / "sub-001_ses-2_desc-subtraction_mask.nii.gz").data
    assert found[change == 1].any()  # the subtraction finds a truly new lesion
    assert (anat / "sub-001_ses-2_desc-FLAIRdifference_map.nii.gz").is_file()
    assert all(r["p_new"] == "n/a" for r in rows)  # the shipped network has no `new` head
    prior = read_volume(anat / "sub-001_ses-2_desc-prior_FLAIR.nii.gz")  # on the follow-up grid, registered
    assert prior.shape == flair.shape and np.corrcoef(prior.data[brain], flair.data[brain])[0, 1] > 0.8
    report = tmp_path / "report"
    result = runner.invoke(app, ["report", "--out", str(report), "--predictions", str(out), "--input",
                                 str(pair_cohort), "--cases", "sub-001_ses-2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    page = (report / "sub-001_ses-2.html").read_text()
    assert "Against the prior exam" in page and 'id="changes-table"' in page and "p new (network)" not in page
    layers = (report / "sub-001_ses-2" / "viewer.js").read_text()
    assert "prior FLAIR (registered)" in layers and "lesions new since the prior" in layers


def test_a_pair_without_a_prior_flair_is_reported_and_the_run_goes_on(pair_cohort: Path, tmp_path: Path) -> None:
    data = tmp_path / "bids"
    shutil.copytree(pair_cohort, data)
    (data / "sub-001" / "ses-1" / "anat" / "sub-001_ses-1_FLAIR.nii.gz").unlink()
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", "--model", str(PRETRAINED / "network"), "--input", str(data),
                                 "--out", str(out), "--prior"])  # fmt: skip
    assert result.exit_code == 1
    (pair,) = _rows(out / "pairs.tsv")
    assert pair["status"] == "failed" and "FLAIR" in pair["reason"]
    assert (out / "sub-001" / "ses-2" / "anat" / "sub-001_ses-2_desc-enhancing_mask.nii.gz").is_file()
