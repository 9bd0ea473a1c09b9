"""``gdfree pair``: each session paired with the one before it, the prior-exam images written per follow-up."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.bids import CaseFiles, attach_pairs, discover_bids
from gdfree.io.images import read_mask, read_volume
from gdfree.preprocess.pair_files import pair_sessions, session_brain

runner = CliRunner()


def test_sessions_pair_in_natural_order() -> None:
    cases = [CaseFiles("a", "10"), CaseFiles("a", "2"), CaseFiles("a", "1"), CaseFiles("b", "1"), CaseFiles("c", None)]
    pairs = [(p.subject, p.session, f.session) for p, f in pair_sessions(cases)]
    assert pairs == [("a", "1", "2"), ("a", "2", "10")]


def test_pair_writes_the_prior_channels_of_each_followup(pair_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    result = runner.invoke(app, ["pair", "--input", str(pair_cohort), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with (out / "pairs.tsv").open() as fh:
        (row,) = list(csv.DictReader(fh, delimiter="\t"))
    assert (row["subject"], row["prior"], row["followup"], row["status"]) == ("001", "1", "2", "ok")
    assert float(row["correlation"]) > 0.8
    cases = {c.case_id: c for c in attach_pairs(discover_bids(pair_cohort), out)}
    first, followup = cases["sub-001_ses-1"], cases["sub-001_ses-2"]
    assert "priorFLAIR" not in first.images and {"priorFLAIR", "diffFLAIR"} <= set(followup.images)
    flair = read_volume(followup.images["FLAIR"])
    diff = read_volume(followup.images["diffFLAIR"])
    assert diff.shape == flair.shape and np.allclose(diff.affine, flair.affine)
    new = read_mask(followup.masks["new"]).data  # the phantom's new and enlarging lesions
    assert new.any() and np.median(diff.data[new]) > 3 > abs(np.median(diff.data[~new & (flair.data > 0)]))
    assert runner.invoke(app, ["pair", "--input", str(pair_cohort), "--out", str(pair_cohort / "x")]).exit_code != 0


def test_a_pair_that_cannot_be_made_is_listed(pair_cohort: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "bids"
    shutil.copytree(pair_cohort, data)
    (data / "sub-001" / "ses-1" / "anat" / "sub-001_ses-1_FLAIR.nii.gz").unlink()
    result = runner.invoke(app, ["pair", "--input", str(data), "--out", str(tmp_path / "pairs")])
    assert result.exit_code == 1 and "no FLAIR" in result.output


def test_the_pair_brain_is_the_datasets_own_else_learned_and_a_mask_off_grid_is_refused(
    pair_cohort: Path, tmp_path: Path
) -> None:
    from gdfree.errors import GdfreeError
    from gdfree.io.images import write_volume
    from gdfree.metrics.voxel import dice
    from gdfree.types import Volume

    flair = read_volume(pair_cohort / "sub-001" / "ses-2" / "anat" / "sub-001_ses-2_FLAIR.nii.gz")
    own = pair_cohort / "derivatives" / "phantom" / "sub-001" / "ses-2" / "anat"
    own = own / "sub-001_ses-2_desc-brain_mask.nii.gz"
    truth = read_mask(own).data
    assert (session_brain(flair, own) == truth).all()
    assert dice(session_brain(flair, None), truth) > 0.8  # deepbet on the FLAIR (Otsu without deepbet)
    off = write_volume(Volume(truth[:-1].astype(np.uint8), flair.affine), tmp_path / "off_mask.nii.gz")
    with pytest.raises(GdfreeError, match="not on the grid"):
        session_brain(flair, off)
