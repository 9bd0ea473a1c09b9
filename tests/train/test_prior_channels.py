"""Prior-exam input channels and the ``new`` head: one model for exams with and without a prior."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import tiny_train_config
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.data.cases import DIFFERENCE_UNIT, load_array_case
from gdfree.data.lesion_sim import LesionSimConfig
from gdfree.data.loader import PriorDropout
from gdfree.errors import InputRoleError
from gdfree.io.bids import attach_pairs, discover_bids
from gdfree.io.images import read_volume
from gdfree.phantom.cohort import write_cohort
from gdfree.phantom.config import PhantomConfig
from gdfree.phantom.longitudinal import PairConfig
from gdfree.train import DatasetSpec, TrainConfig
from gdfree.types import check_input_modalities, exam_roles

runner = CliRunner()
INPUTS = ("T1w", "T2w", "FLAIR", "priorFLAIR", "diffFLAIR")


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three 4 mm subjects with a prior and a follow-up each, and their `gdfree pair` folder."""
    root = tmp_path_factory.mktemp("prior")
    cfg = PhantomConfig(resolution_mm=4, lesions_min=10, lesions_max=14)
    write_cohort(root / "bids", cfg, 3, seed=3, timepoints=2, pair=PairConfig(move_degrees=(1.0, 2.0),
                                                                             move_mm=(1.0, 2.0)))  # fmt: skip
    result = runner.invoke(app, ["pair", "--input", str(root / "bids"), "--out", str(root / "pairs")])
    assert result.exit_code == 0, result.output
    return root / "bids", root / "pairs"


def test_prior_channels_come_together_with_the_flair() -> None:
    assert check_input_modalities(["flair", "priorflair", "diffflair"]) == ("FLAIR", "priorFLAIR", "diffFLAIR")
    assert exam_roles(INPUTS) == ("T1w", "T2w", "FLAIR")
    for bad in (["FLAIR", "priorFLAIR"], ["T1w", "priorFLAIR", "diffFLAIR"]):
        with pytest.raises(InputRoleError, match="prior-exam channels"):
            check_input_modalities(bad)
    with pytest.raises(ValueError, match="prior-exam channels"):
        TrainConfig(datasets=(DatasetSpec("x", pairs="p"),))
    with pytest.raises(ValueError, match="lesion_sim and generative"):
        TrainConfig(modalities=INPUTS, lesion_sim=LesionSimConfig(probability=0.5))


def test_an_exam_without_a_prior_reads_nothing_changed(paired: tuple[Path, Path]) -> None:
    bids, pairs = paired
    cases = {c.case_id: c for c in attach_pairs(discover_bids(bids), pairs)}
    first = load_array_case(cases["sub-001_ses-1"], INPUTS, ("enhancing", "lesion", "new"))
    assert np.array_equal(first.image[3], first.image[2]) and not first.image[4].any()
    assert first.labels["new"] is None and first.labels["lesion"] is not None
    assert len(first.fingerprints) == 3  # the exam's own files only
    follow = load_array_case(cases["sub-001_ses-2"], INPUTS, ("enhancing", "lesion", "new"))
    assert follow.labels["new"] is not None and follow.labels["new"].any()
    diff = read_volume(cases["sub-001_ses-2"].images["diffFLAIR"]).data
    inside = follow.brain & (np.abs(diff) < 4 * DIFFERENCE_UNIT)
    assert np.allclose(follow.image[4][inside], diff[inside] / DIFFERENCE_UNIT, atol=1e-5)
    assert not np.array_equal(follow.image[3], follow.image[2])
    # the prior-exam channels of a single-exam model are never read
    single = load_array_case(cases["sub-001_ses-2"], exam_roles(INPUTS), ("enhancing", "lesion"))
    assert np.array_equal(single.image, follow.image[:3])


def test_prior_dropout_makes_a_patch_read_as_without_a_prior() -> None:
    drop = PriorDropout.for_inputs(0.999, INPUTS, ("enhancing", "lesion", "new"))
    assert drop is not None and PriorDropout.for_inputs(0.5, exam_roles(INPUTS), ("lesion",)) is None
    image = np.random.default_rng(0).normal(size=(5, 4, 4, 4)).astype(np.float32)
    has = np.ones(3, bool)
    drop.apply(image, has, np.random.default_rng(1))
    assert np.array_equal(image[3], image[2]) and not image[4].any() and has.tolist() == [True, True, False]
    kept = image.copy()
    dataclasses.replace(drop, probability=0.0).apply(kept, has, np.random.default_rng(1))
    assert np.array_equal(kept, image)


def test_one_model_trains_on_pairs_and_predicts_with_and_without_the_prior(
    paired: tuple[Path, Path], tmp_path: Path
) -> None:
    from gdfree.train import train

    bids, pairs = paired
    cfg = tiny_train_config(bids, datasets=(DatasetSpec(str(bids), pairs=str(pairs)),), modalities=INPUTS,
                            heads=("enhancing", "lesion", "new"), head_weights=(1.0, 0.3, 1.0))  # fmt: skip
    train(cfg, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["modalities"] == list(INPUTS) and meta["heads"] == ["enhancing", "lesion", "new"]
    out = tmp_path / "pred"
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "run"), "--input", str(bids), "--out", str(out),
                                 "--prior", "--allow-training-cases"])  # fmt: skip
    assert result.exit_code == 0, result.output
    for ses in ("1", "2"):  # the first sessions read "no prior", the follow-ups their pair
        assert (out / "sub-001" / f"ses-{ses}" / "anat" / f"sub-001_ses-{ses}_desc-new_probseg.nii.gz").is_file()
    with (out / "sub-001" / "ses-2" / "anat" / "sub-001_ses-2_changes.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert all(0 <= float(r["p_new"]) <= 1 for r in rows)
    report = tmp_path / "report"
    result = runner.invoke(app, ["report", "--out", str(report), "--predictions", str(out), "--input", str(bids),
                                 "--cases", "sub-001_ses-2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "new-lesion probability (network)" in (report / "sub-001_ses-2" / "viewer.js").read_text()
    assert "p new (network)" in (report / "sub-001_ses-2.html").read_text()
    plain = tmp_path / "plain"  # without --prior every session reads "no prior"
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "run"), "--input", str(bids), "--out",
                                 str(plain), "--allow-training-cases"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "The model reads a prior exam; without --prior" in result.output
    first = "sub-001/ses-1/anat/sub-001_ses-1_desc-enhancing_probseg.nii.gz"
    assert np.array_equal(read_volume(out / first).data, read_volume(plain / first).data)
    second = "sub-001/ses-2/anat/sub-001_ses-2_desc-enhancing_probseg.nii.gz"
    assert not np.array_equal(read_volume(out / second).data, read_volume(plain / second).data)
