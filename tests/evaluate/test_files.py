"""``gdfree evaluate`` end to end on the tiny synthetic cohort, and the errors of the file layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.evaluate.files import discover_predictions, evaluate_dataset
from gdfree.io.adapters import discover
from gdfree.io.bids import derivative_path
from gdfree.io.images import read_volume, write_volume

runner = CliRunner()


def _write_predictions(cohort: Path, out: Path, skip: tuple[str, ...] = (), shift: int = 0) -> None:
    """The reference lesion masks as probability maps (1.0 inside), optionally shifted by ``shift`` voxels."""
    for case in discover(cohort):
        if case.subject in skip:
            continue
        ref = read_volume(case.masks["lesion"])
        prob = np.roll(np.asarray(ref.data, np.float32), shift, axis=0)
        write_volume(ref.with_data(prob), derivative_path(out, case.subject, None, "probseg", desc="lesion"))


def test_perfect_predictions_score_perfectly(tiny_cohort: Path, tmp_path: Path):
    preds, out = tmp_path / "pred", tmp_path / "eval"
    _write_predictions(tiny_cohort, preds)
    result = runner.invoke(app, ["evaluate", "--pred", str(preds), "--ref", str(tiny_cohort), "--out", str(out),
                                 "--target", "lesion", "--n-boot", "50"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Lesion F1" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 3
    assert summary["per_case"]["dice"]["mean"] == 1.0
    assert summary["pooled_lesions"]["lesion_f1"] == 1.0
    assert summary["pooled_lesions"]["fp_per_scan"] == 0.0
    assert set(summary["froc"]["sensitivity"]) == {1.0} and set(summary["froc"]["fp_per_scan"]) == {0.0}
    assert summary["calibration"]["ece"] == 0.0
    # Every subject of the tiny cohort has lesions: one class only, so no AUC (null in JSON, n/a on screen).
    assert summary["patient"]["n_active"] == 3 and summary["patient"]["auc"] is None
    assert summary["config"]["rule"]["name"] == "msseg" and summary["provenance"]["target"] == "lesion"
    cases = (out / "cases.tsv").read_text().splitlines()
    assert len(cases) == 4 and cases[0].startswith("case_id\tdice\t")
    lesions = (out / "lesions.tsv").read_text().splitlines()
    n_lesions = summary["pooled_lesions"]["n_ref_lesions"]
    assert len(lesions) == 1 + 2 * n_lesions and all("\ttrue\t" in line for line in lesions[1:])
    assert {p.name for p in out.iterdir()} == {
        "cases.tsv", "lesions.tsv", "by_volume.tsv", "froc.tsv", "reliability.tsv", "summary.json"
    }  # fmt: skip


def test_rules_and_shifted_predictions(tiny_cohort: Path, tmp_path: Path):
    preds = tmp_path / "pred"
    _write_predictions(tiny_cohort, preds, shift=1)
    by_rule = {}
    for rule in ("msseg", "iou", "any"):
        from gdfree.evaluate import EvaluationConfig
        from gdfree.metrics import DetectionRule

        cfg = EvaluationConfig(rule=DetectionRule.preset(rule), n_boot=10)
        results, summary, _ = evaluate_dataset(preds, tiny_cohort, target="lesion", config=cfg)
        by_rule[rule] = summary["pooled_lesions"]
        assert all(r.row["hd_mm"] == 4.0 for r in results)  # a one-voxel shift at 4 mm
        assert all(r.row["dice"] < 1.0 for r in results)
    # "any" counts at least the detections of the stricter rules.
    assert by_rule["any"]["lesion_tp_ref"] >= by_rule["iou"]["lesion_tp_ref"]
    assert by_rule["any"]["lesion_sensitivity"] > 0


def test_missing_predictions_and_only_predicted(tiny_cohort: Path, tmp_path: Path):
    preds = tmp_path / "pred"
    _write_predictions(tiny_cohort, preds, skip=("001",))
    args = ["evaluate", "--pred", str(preds), "--ref", str(tiny_cohort), "--out", str(tmp_path / "e"),
            "--target", "lesion", "--n-boot", "10"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "sub-001" in result.output and "--only-predicted" in result.output
    assert not (tmp_path / "e").exists()
    result = runner.invoke(app, [*args, "--only-predicted"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["n_cases"] == 2


def test_a_prediction_on_another_grid_is_refused_and_the_other_cases_scored(tiny_cohort: Path, tmp_path: Path):
    preds = tmp_path / "pred"
    _write_predictions(tiny_cohort, preds)
    path = derivative_path(preds, "002", None, "probseg", desc="lesion")
    vol = read_volume(path)
    moved = vol.affine.copy()
    moved[0, 3] += 4.0
    write_volume(type(vol)(vol.data, moved), path)
    result = runner.invoke(app, ["evaluate", "--pred", str(preds), "--ref", str(tiny_cohort), "--out",
                                 str(tmp_path / "e"), "--target", "lesion", "--n-boot", "10"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "sub-002_desc-lesion_probseg.nii.gz" in result.output and "reference grid" in result.output
    failures = (tmp_path / "e" / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith("sub-002\t")
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["n_cases"] == 2


def test_probabilities_out_of_range_name_the_case(tiny_cohort: Path, tmp_path: Path):
    preds = tmp_path / "pred"
    _write_predictions(tiny_cohort, preds)
    path = derivative_path(preds, "003", None, "probseg", desc="lesion")
    vol = read_volume(path)
    write_volume(vol.with_data(np.asarray(vol.data) * 100), path)
    results, summary, _ = evaluate_dataset(preds, tiny_cohort, target="lesion")
    assert [r.case_id for r in results] == ["sub-001", "sub-002"]  # the others are scored
    assert list(summary["failures"]) == ["sub-003"] and "probabilities in" in summary["failures"]["sub-003"]


def test_prediction_discovery_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        discover_predictions(tmp_path / "absent")
    with pytest.raises(ValueError, match="no prediction found"):
        discover_predictions(tmp_path)
    with pytest.raises(ValueError, match="target"):
        discover_predictions(tmp_path, target="tumour")
    vol = np.zeros((2, 2, 2), np.float32)
    from gdfree.types import Volume

    for folder in ("a", "b"):
        write_volume(Volume(vol, np.eye(4)), tmp_path / folder / "sub-01_desc-enhancing_probseg.nii.gz")
    with pytest.raises(ValueError, match="two probseg files"):
        discover_predictions(tmp_path)


def test_mask_only_predictions(tiny_cohort: Path, tmp_path: Path):
    preds = tmp_path / "pred"
    for case in discover(tiny_cohort):
        ref = read_volume(case.masks["lesion"])
        write_volume(ref.with_data(np.asarray(ref.data, np.uint8)),
                     derivative_path(preds, case.subject, None, "mask", desc="lesion"))  # fmt: skip
    _, summary, _ = evaluate_dataset(preds, tiny_cohort, target="lesion")
    assert "froc" not in summary and "calibration" not in summary and "patient" not in summary
    assert any("max_prob needs a probability map" in n for n in summary["notes"])
    assert summary["pooled_lesions"]["lesion_f1"] == 1.0
    from gdfree.evaluate import EvaluationConfig

    cfg = EvaluationConfig(patient_score="count")
    _, counted, _ = evaluate_dataset(preds, tiny_cohort, target="lesion", config=cfg)
    assert counted["patient"]["score"] == "count" and counted["patient"]["sensitivity"] == 1.0


def test_patient_scores_from_probabilities(tiny_cohort: Path, tmp_path: Path):
    preds = tmp_path / "pred"
    _write_predictions(tiny_cohort, preds)
    case = discover(tiny_cohort)[0]
    path = derivative_path(preds, case.subject, None, "probseg", desc="lesion")
    vol = read_volume(path)
    prob = np.asarray(vol.data) * 0.7
    from scipy import ndimage

    brain = np.asarray(read_volume(case.masks["brain"]).data) > 0
    lone = np.argwhere(brain & ~ndimage.binary_dilation(prob > 0, iterations=2))[0]
    prob[tuple(lone)] = 0.95  # a lone brain voxel: the highest probability but, 64 mm3, no lesion below
    write_volume(vol.with_data(prob), path)
    from gdfree.evaluate import EvaluationConfig
    from gdfree.metrics import DetectionRule

    scores = {}
    for how in ("max_prob", "max_lesion_prob", "top_lesion_median"):
        cfg = EvaluationConfig(DetectionRule.preset("msseg", min_volume_mm3=64.0), patient_score=how)
        results, _, _ = evaluate_dataset(preds, tiny_cohort, target="lesion", config=cfg)
        scores[how] = results[0].score
    assert scores == {"max_prob": pytest.approx(0.95), "max_lesion_prob": pytest.approx(0.7),
                      "top_lesion_median": pytest.approx(0.7)}  # fmt: skip
