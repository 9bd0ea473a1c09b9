"""The model shipped in the package: small, verified on load, and scored by ``demo --pretrained``."""

from __future__ import annotations

from pathlib import Path

from gdfree.activity import ActivityClassifier
from gdfree.demo import PRETRAINED, run_pretrained_demo
from gdfree.infer.model import TrainedModel


def test_shipped_model_is_small_and_loads_verified():
    size = sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file())
    assert size < 20 * 2**20
    model = TrainedModel.load(PRETRAINED / "network")
    assert model.modalities == ("T1w", "T2w", "FLAIR") and not model.oracle and model.patient_threshold is not None
    # issue 33: a patient score that does not saturate, chosen on its validation patients, and a threshold inside
    assert model.patient_score == "top_lesion_median" and 0.05 < model.patient_threshold < 0.95
    clf = ActivityClassifier.load(PRETRAINED / "activity")
    assert clf.modalities == model.modalities and clf.network_sha256 == model.weights_sha256
    assert "phantoms only" in (PRETRAINED / "MODEL_CARD.md").read_text()


def test_pretrained_demo_scores_fresh_patients(tmp_path: Path):
    from rich.console import Console

    console = Console(record=True, width=200)
    evaluation = run_pretrained_demo(tmp_path / "demo", subjects=2, jobs=1, console=console)
    assert evaluation["n_cases"] == 2 and evaluation["demo"]["first"] == 1000
    assert evaluation["lesion_activity"]["reference_lesions"]["n_lesions"] > 0
    assert evaluation["lesion_framing"]["n_cases"] == 2
    cases = sorted(p.name for p in (tmp_path / "demo" / "predictions").glob("sub-*"))
    assert cases == ["sub-1001", "sub-1002"]
    report = (tmp_path / "demo" / "report").resolve()
    assert (report / "index.html").is_file() and (report / "sub-1001.html").is_file()  # the cohort and one case
    assert not (report / "sub-1002.html").exists()
    printed = console.export_text()
    assert str(report / "index.html") in printed and str(report / "sub-1001.html") in printed
