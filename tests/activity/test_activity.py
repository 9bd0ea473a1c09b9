"""The lesion-level activity framing: features, the classifier's fit, refusal and storage, and its metrics."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from gdfree.activity import ActivityClassifier, ActivityConfig, case_lesions, fit_activity, lesion_activity_labels
from gdfree.activity.classifier import feature_image
from gdfree.data.cases import ArrayCase
from gdfree.metrics.activity import lesion_activity_case, lesion_activity_summary
from gdfree.metrics.patient import roc_auc

SHAPE = (24, 24, 24)


def _case(subject: str, rng: np.random.Generator, n_lesions: int = 6) -> ArrayCase:
    """A 2 mm case with cubic lesions on a grid; the active ones are brighter on channel 1 (the 'FLAIR')."""
    image = rng.normal(0, 0.3, (2, *SHAPE)).astype(np.float32)
    lesion = np.zeros(SHAPE, bool)
    enhancing = np.zeros(SHAPE, bool)
    for k in range(n_lesions):
        x, y = 3 + 7 * (k % 3), 4 + 9 * (k // 3)
        active = bool(rng.random() < 0.4) or k == 0
        inactive = k == 1  # every case has both kinds
        size = int(rng.integers(2, 4))
        box = (slice(x, x + size), slice(y, y + size), slice(10, 10 + size))
        lesion[box] = True
        image[(0, *box)] += 1.0
        if active and not inactive:
            enhancing[box] = True
            image[(1, *box)] += 2.0
        else:
            image[(1, *box)] += 1.0
    labels = {"lesion": lesion, "enhancing": enhancing}
    return ArrayCase(f"sub-{subject}", subject, None, image, labels, np.ones(SHAPE, bool),
                     np.diag([2.0, 2.0, 2.0, 1.0]), fingerprints=(f"print-{subject}",))  # fmt: skip


@pytest.fixture(scope="module")
def cases() -> list[ArrayCase]:
    rng = np.random.default_rng(0)
    return [_case(f"{i:02d}", rng) for i in range(16)]


def test_lesion_features_and_labels_per_lesion(cases):
    one = case_lesions(cases[0], cases[0].labels["lesion"])
    assert one.n == 6 and one.features.shape[0] == 6 and np.isfinite(one.features).all()
    assert one.active is not None and one.active[0] and not one.active[1]
    assert (lesion_activity_labels(one.labels, one.n, cases[0].labels["enhancing"]) == one.active).all()


def test_classifier_separates_active_lesions_on_held_out_patients(cases, tmp_path):
    clf = fit_activity(cases[:10], cases[10:13], ("T1w", "FLAIR"))
    ys, ps = [], []
    for c in cases[13:]:
        found = case_lesions(c, c.labels["lesion"])
        ys.append(found.active)
        ps.append(clf.p_active(found.features))
    assert roc_auc(np.concatenate(ys), np.concatenate(ps)) > 0.95
    assert 0 < clf.threshold < 1 and clf.meta["validation"]["n_patients"] == 3
    # saved and loaded: the same scores; a changed model file is refused
    clf.save(tmp_path / "act")
    again = ActivityClassifier.load(tmp_path / "act")
    found = case_lesions(cases[13], cases[13].labels["lesion"])
    assert np.allclose(again.p_active(found.features), clf.p_active(found.features))
    text = (tmp_path / "act" / "activity_model.txt").read_text()
    (tmp_path / "act" / "activity_model.txt").write_text(text.replace("learning_rate", "learning_rat3", 1))
    with pytest.raises(ValueError, match="SHA-256"):
        ActivityClassifier.load(tmp_path / "act")
    (tmp_path / "act" / "activity_model.txt").write_text(text)
    meta = json.loads((tmp_path / "act" / "activity.json").read_text())
    for field, edited in (("threshold", 0.01), ("calibration", [1.0, 5.0]), ("meta_sha256", None)):
        changed = {k: v for k, v in meta.items() if not (k == field and edited is None)}
        if edited is not None:
            changed[field] = edited
        (tmp_path / "act" / "activity.json").write_text(json.dumps(changed))
        with pytest.raises(ValueError, match="meta_sha256"):
            ActivityClassifier.load(tmp_path / "act")


def test_classifier_refuses_a_patient_it_was_fitted_on(cases):
    clf = fit_activity(cases[:10], cases[10:13], ("T1w", "FLAIR"))
    with pytest.raises(ValueError, match="fit or validate"):
        clf.refuse_if_seen(cases[2].case_id, cases[2].fingerprints)
    clf.refuse_if_seen(cases[14].case_id, cases[14].fingerprints)  # a test patient passes
    with pytest.raises(ValueError, match="both the training and validation"):
        fit_activity(cases[:10], cases[9:12], ("T1w", "FLAIR"))


def test_lesion_level_auc_of_a_hand_built_case_equals_the_hand_value():
    """Three reference lesions (one active); the scorer saw lesions 1 and 2 (p 0.9 and 0.2), not the third."""
    ref = np.zeros((12, 12, 12), bool)
    ref[1:3, 1:3, 1:3] = ref[6:8, 6:8, 6:8] = ref[9:11, 1:3, 1:3] = True
    enh = np.zeros_like(ref)
    enh[6, 6, 6] = True  # the second lesion is active
    scored = np.zeros(ref.shape, int)
    scored[1:3, 1:3, 1:3] = 1
    scored[6:8, 6:8, 6:8] = 2
    refs, own = lesion_activity_case("sub-01", ref, enh, scored, {1: 0.9, 2: 0.2}, (1, 1, 1))
    assert refs.active.tolist() == [False, True, False] and refs.score.tolist() == [0.9, 0.2, 0.0]
    # by hand: the active lesion (0.2) outscores one of two inactive ones (0.0) and loses to 0.9: AUC 1/2
    summary = lesion_activity_summary([refs], threshold=0.5, n_boot=10)
    assert summary["auc"] == pytest.approx(0.5)
    # called active: only the first (0.9, inactive): no true positive, F1 0
    assert summary["f1"] == 0.0 and summary["n_lesions"] == 3 and summary["n_active"] == 1
    assert own.active.tolist() == [False, True] and own.score.tolist() == [0.9, 0.2]
    json.dumps(summary)  # JSON-ready


def test_white_matter_features_are_the_cases_wm_ratio_image(tiny_cohort):
    """Rebuilt from the z-scored image and its raw statistics: the image ``wm-ratio-clip10`` normalisation gives,
    wherever the z-score did not clip."""
    from gdfree.data.cases import WM_RATIO, load_array_case
    from gdfree.io.adapters import discover

    files = sorted(discover(tiny_cohort), key=lambda c: c.subject)[0]
    mods = ("T1w", "T2w", "FLAIR")
    z = load_array_case(files, mods, ("lesion",))
    wm = load_array_case(files, mods, ("lesion",), normalisation=WM_RATIO)
    assert feature_image(z, mods) is z.image
    assert feature_image(wm, mods, "white-matter", WM_RATIO) is wm.image
    rebuilt = feature_image(z, mods, "white-matter")
    inside = z.brain & (np.abs(z.image) < 5).all(axis=0)
    assert inside.sum() > 0.9 * z.brain.sum()
    np.testing.assert_allclose(rebuilt[:, inside], wm.image[:, inside], atol=2e-3)
    with pytest.raises(ValueError, match="feature_reference must be one of network, white-matter"):
        ActivityConfig(feature_reference="csf")


def test_predict_scores_lesions_on_the_features_the_classifier_was_fitted_on(cases, tmp_path):
    """A white-matter classifier records its reference (a default one records nothing new), survives saving, and
    predict's lesion scoring computes the features it was fitted on."""
    from gdfree.io.bids import CaseFiles
    from gdfree.metrics.lesions import DetectionRule
    from gdfree.predict.case import score_lesions

    raw = [dataclasses.replace(c, raw_stats=((1000.0, 100.0), (800.0, 50.0))) for c in cases]
    mods = ("T1w", "FLAIR")
    clf = fit_activity(raw[:10], raw[10:13], mods, ActivityConfig(feature_reference="white-matter"))
    assert clf.meta["config"]["feature_reference"] == "white-matter" == clf.feature_reference
    assert "feature_reference" not in fit_activity(cases[:10], cases[10:13], mods).meta["config"]
    test = raw[14]
    lesion = np.asarray(test.labels["lesion"])
    own = clf.p_active(case_lesions(test, lesion, modalities=mods, reference="white-matter").features)
    other = clf.p_active(case_lesions(test, lesion, modalities=mods).features)
    assert np.abs(own - other).max() > 1e-3  # the reference changes the scores: the check below can fail
    loaded = ActivityClassifier.load(clf.save(tmp_path / "wm"))
    scored = score_lesions(loaded, test, {"mask": {}, "prob": {}, "lesions": []}, CaseFiles(test.subject),
                           DetectionRule("msseg", 26, 0.0))  # fmt: skip
    np.testing.assert_allclose([r["p_active"] for r in scored["rows"]], own, rtol=1e-6)
