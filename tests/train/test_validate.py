"""Validation chooses the decision threshold and the minimum predicted lesion volume together."""

from __future__ import annotations

import numpy as np
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
