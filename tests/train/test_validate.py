"""Validation chooses the decision threshold and the minimum predicted lesion volume together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gdfree.data.cases import ArrayCase
from gdfree.metrics import DetectionRule
from gdfree.train.validation import validate


class _Fixed(nn.Module):
    """Returns the same logits whatever the input (one head)."""

    def __init__(self, prob: np.ndarray) -> None:
        super().__init__()
        p = torch.from_numpy(np.clip(prob, 1e-4, 1 - 1e-4).astype(np.float32))
        self.register_buffer("logits", torch.logit(p)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def _case(with_speck: bool) -> tuple[ArrayCase, np.ndarray]:
    """A 2 mm case with one 8-voxel enhancing lesion predicted at 0.9, and a one-voxel (8 mm3) false
    positive at 0.9 when ``with_speck``."""
    shape = (12, 12, 12)
    ref = np.zeros(shape, bool)
    ref[2:4, 2:4, 2:4] = True
    prob = np.where(ref, 0.9, 0.01)
    if with_speck:
        prob[9, 9, 9] = 0.9
    case = ArrayCase("sub-01", "01", None, np.zeros((1, *shape), np.float32), {"enhancing": ref},
                     np.ones(shape, bool), np.diag([2.0, 2.0, 2.0, 1.0]))  # fmt: skip
    return case, prob


def test_validation_drops_one_voxel_false_positives_only_when_that_helps():
    rule = DetectionRule.preset("msseg")
    case, prob = _case(with_speck=True)
    val = validate(_Fixed(prob), [case], ("enhancing",), rule, "cpu")
    # min 0: 1 true and 1 false lesion (F1 2/3); min 10 mm3 drops the 8 mm3 speck (F1 1) and keeps the lesion.
    assert val["min_lesion_mm3"] == 10.0 and val["enhancing_f1"] == 1.0
    clean, prob = _case(with_speck=False)
    val = validate(_Fixed(prob), [clean], ("enhancing",), rule, "cpu")
    assert val["min_lesion_mm3"] == 0.0 and val["enhancing_f1"] == 1.0  # a tie goes to the smallest volume
    assert val["threshold"] == 0.1  # and to the lowest threshold


def test_patient_threshold_maximises_youden_j_and_breaks_ties_high():
    from gdfree.train.validation import patient_threshold

    # 0.6 and 0.9 both give J = 0.5 (sensitivity 1 / specificity 0.5, and 0.5 / 1): the higher wins
    assert patient_threshold([1, 1, 0, 0], [0.9, 0.6, 0.7, 0.2]) == 0.9
    assert patient_threshold([1, 0, 0], [0.8, 0.3, 0.5]) == 0.8
    assert patient_threshold([1, 1], [0.8, 0.3]) is None


def test_a_saturated_maximum_gives_way_to_the_lesion_median_and_its_threshold_means_something():
    """Issue 33: every validation patient has some voxel at 0.9999, so the maximum probability ranks them by
    noise and its Youden threshold sits at 0.9999; the median of the top predicted lesion is 0.8-0.9 on the
    active patients and 0.3 on the false lesions of the inactive ones."""
    from gdfree.metrics.patient import top_lesion_median
    from gdfree.train.validation import choose_patient_score, patient_scores

    rule = DetectionRule.preset("msseg")
    shape = (12, 12, 12)
    labelled, probs, active = [], [], []
    for i, (is_active, core) in enumerate([(1, 0.9), (1, 0.8), (1, 0.85), (0, 0.3), (0, 0.3), (0, 0.3)]):
        ref = np.zeros(shape, bool)
        if is_active:
            ref[2:5, 2:5, 2:5] = True
        prob = np.full(shape, 0.01)
        prob[2:5, 2:5, 2:5] = core  # a 27-voxel lesion, true or false
        prob[3, 3, 3] = 0.9999 - 0.00001 * (i % 2 if is_active else 1 - i % 2)  # the saturated voxel, inverted order
        case = ArrayCase(f"sub-{i}", str(i), None, np.zeros((1, *shape), np.float32), {"enhancing": ref},
                         np.ones(shape, bool), np.diag([2.0, 2.0, 2.0, 1.0]))  # fmt: skip
        labelled.append((case, prob))
        probs.append(prob)
        active.append(is_active)
    scores, _ = patient_scores(probs, labelled, 0.2, 0.0, rule)
    assert scores["top_lesion_median"] == pytest.approx([0.9, 0.8, 0.85, 0.3, 0.3, 0.3])
    chosen = choose_patient_score(active, scores)
    assert chosen["patient_score"] == "top_lesion_median" and chosen["enhancing_auc"] == 1.0
    assert 0.05 < chosen["patient_threshold"] < 0.95
    assert chosen["patient_auc_max_prob"] < 1.0 and chosen["patient_brier_top_lesion_median"] < 0.1
    none = np.zeros(shape, np.int32)
    assert top_lesion_median(probs[0], none) == 0.0  # no predicted lesion: score 0


def test_a_model_records_its_patient_score_and_an_old_one_reads_as_the_maximum():
    from gdfree.models.record import ModelRecord

    base = {"architecture": {"class": "MultitaskUNet", "kwargs": {}}, "heads": ["enhancing"],
            "modalities": ["FLAIR"], "normalisation": "zscore-brain-clip5", "threshold": 0.5}  # fmt: skip
    assert ModelRecord.from_json(base).patient_score == "max_prob"
    new = ModelRecord.from_json({**base, "patient_threshold": 0.4, "patient_score": "top_lesion_calibrated",
                                 "lesion_calibration": [0.5, -2.0]})  # fmt: skip
    again = ModelRecord.from_json(new.to_json())
    assert again.patient_score == "top_lesion_calibrated" and again.lesion_calibration == (0.5, -2.0)
    with pytest.raises(ValueError, match="patient_score"):
        ModelRecord.from_json({**base, "patient_score": "count"})
    with pytest.raises(ValueError, match="lesion_calibration"):
        ModelRecord.from_json({**base, "patient_score": "top_lesion_calibrated"})


def test_a_lesion_calibration_reads_saturated_maxima_on_the_logit_scale():
    """Every predicted lesion peaks above 0.999, so the maximum probability puts the patient threshold at
    0.9999...; on the logit scale the true lesions (0.999999) and the false ones (0.999) are far apart, and the
    calibrated top lesion puts its threshold inside the scale."""
    from gdfree.metrics.patient import calibrated_lesions, fit_lesion_calibration
    from gdfree.train.validation import choose_patient_score, patient_scores

    rule = DetectionRule.preset("msseg")
    shape = (12, 12, 12)
    labelled, probs, active = [], [], []
    for i, peak in enumerate([0.999999, 0.9999995, 0.999998, 0.999, 0.998, 0.9995, 0.9993]):
        ref = np.zeros(shape, bool)
        if peak > 0.9999:
            ref[2:5, 2:5, 2:5] = True
        prob = np.full(shape, 0.01)
        prob[2:5, 2:5, 2:5] = 0.6
        prob[3, 3, 3] = peak
        case = ArrayCase(f"sub-{i}", str(i), None, np.zeros((1, *shape), np.float32), {"enhancing": ref},
                         np.ones(shape, bool), np.diag([2.0, 2.0, 2.0, 1.0]))  # fmt: skip
        labelled.append((case, prob))
        probs.append(prob)
        active.append(int(peak > 0.9999))
    scores, fitted = patient_scores(probs, labelled, 0.2, 0.0, rule)
    assert fitted is not None and fitted[0] > 0
    assert scores["max_prob"] == pytest.approx([float(p.max()) for p in probs])
    chosen = choose_patient_score(active, scores)
    assert chosen["patient_threshold_max_prob"] > 0.99  # the saturated score's threshold is refused
    assert chosen["patient_score"] == "top_lesion_calibrated" and chosen["enhancing_auc"] == 1.0
    assert 0.05 < chosen["patient_threshold"] < 0.95
    assert fit_lesion_calibration([0.9, 0.8], [True, True]) is None  # one kind of lesion: nothing to fit
    assert calibrated_lesions(np.array([0.5]), (1.0, 0.0)) == pytest.approx([0.5])
