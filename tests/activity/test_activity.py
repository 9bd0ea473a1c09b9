"""The lesion-level activity framing: features, the classifier's fit, refusal and storage, and its metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdfree.activity import ActivityClassifier, case_lesions, fit_activity, lesion_activity_labels
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
