"""Uncertainty measures on hand-made stacks, MC dropout / flips / ensembles, temperature scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gdfree.infer.sampling import FLIPS, sample_predictions
from gdfree.models.forward import predict_volume
from gdfree.models.unet import MultitaskUNet
from gdfree.uncertainty import fit_temperature, lesion_uncertainty, patient_uncertainty, voxel_uncertainty


def test_a_certain_prediction_has_no_uncertainty():
    stack = np.zeros((5, 4, 4, 4))
    stack[:, 1:3, 1:3, 1:3] = 1.0
    for name, value in voxel_uncertainty(stack).items():
        if name != "mean":
            assert np.all(value == 0), name


def test_voxel_measures_match_hand_computed_values():
    stack = np.array([0.2, 0.8]).reshape(2, 1, 1, 1)
    out = voxel_uncertainty(stack)
    h02 = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert out["mean"].item() == pytest.approx(0.5)
    assert out["predictive_entropy"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert out["expected_entropy"].item() == pytest.approx(h02, rel=1e-6)
    assert out["mutual_information"].item() == pytest.approx(math.log(2) - h02, rel=1e-5)
    assert out["variance"].item() == pytest.approx(0.09, rel=1e-6)
    with pytest.raises(ValueError, match="probabilities"):
        voxel_uncertainty(np.full((2, 1, 1, 1), 1.5))


def test_lesion_measures_and_structural_uncertainty():
    labels = np.zeros((6, 6, 6), np.int32)
    labels[1:3, 1:3, 1] = 1  # a 4-voxel lesion
    stack = np.zeros((3, 6, 6, 6))
    stack[0][labels == 1] = 0.9  # same extent: IoU 1
    stack[1, 2:4, 1:3, 1] = 0.9  # half of it, shifted: IoU 2 / 6
    # sample 2 misses it: IoU 0
    (row,) = lesion_uncertainty(stack, labels, 0.5)
    assert row["lesion_id"] == 1 and row["lsu"] == pytest.approx(1 - (1 + 1 / 3 + 0) / 3)
    voxel = voxel_uncertainty(stack)
    assert row["variance_max"] == pytest.approx(float(voxel["variance"][labels == 1].max()))
    assert row["predictive_entropy_mean"] == pytest.approx(float(voxel["predictive_entropy"][labels == 1].mean()))
    assert lesion_uncertainty(stack, np.zeros_like(labels), 0.5) == []
    with pytest.raises(ValueError, match="shape"):
        lesion_uncertainty(stack, labels[:-1], 0.5)


def test_patient_uncertainty():
    out = patient_uncertainty([0.1, 0.3, 0.5])
    assert out["score_mean"] == pytest.approx(0.3) and out["score_std"] == pytest.approx(math.sqrt(0.08 / 3))
    assert out["score_low"] == pytest.approx(0.11) and out["score_high"] == pytest.approx(0.49)


def _tiny(dropout: float = 0.3) -> nn.Module:
    torch.manual_seed(0)
    return MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=(2, 2), full_res_channels=4,
                         num_res_units=1, dropout=dropout)  # fmt: skip


def test_mc_dropout_passes_differ_and_eval_mode_returns():
    model = _tiny()
    image = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
    stack = sample_predictions([model], image, mc=4, seed=1)
    assert stack.shape == (4, 2, 8, 8, 8)
    assert not np.array_equal(stack[0], stack[1])
    assert np.array_equal(stack, sample_predictions([model], image, mc=4, seed=1))  # seeded
    assert not model.training and not any(m.training for m in model.modules())
    ensemble = sample_predictions([model, _tiny()], image, mc=2, flips=True)
    assert ensemble.shape == (2 * 2 * len(FLIPS), 2, 8, 8, 8)


def test_mc_dropout_refuses_a_model_without_working_dropout():
    image = np.zeros((2, 8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="no dropout"):
        sample_predictions([_tiny(dropout=0.0)], image, mc=3)

    class DeadDropout(nn.Dropout3d):  # what an export that drops dropout looks like from outside
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    model = _tiny()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Dropout3d):
                setattr(parent, name, DeadDropout(child.p))
    with pytest.raises(ValueError, match="identical"):
        sample_predictions([model], image, mc=3)


def test_flips_are_undone():
    identity = nn.Conv3d(1, 1, 1, bias=False)
    with torch.no_grad():
        identity.weight.fill_(1.0)
    image = np.random.default_rng(2).normal(size=(1, 5, 6, 7)).astype(np.float32)
    stack = sample_predictions([identity], image, flips=True)
    expected = 1 / (1 + np.exp(-image))
    assert stack.shape == (8, 1, 5, 6, 7) and np.allclose(stack, expected[None], atol=1e-6)


def test_temperature_scaling():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 3, 200_000)
    y = rng.random(z.size) < 1 / (1 + np.exp(-z / 2.0))  # the logits are twice too confident
    assert fit_temperature(z, y) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="single class"):
        fit_temperature(z, np.ones_like(y))
    conv = nn.Conv3d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    image = np.full((1, 2, 2, 2), 3.0, np.float32)
    assert predict_volume(conv, image, temperature=2.0)[0, 0, 0, 0] == pytest.approx(1 / (1 + math.exp(-1.5)))
    assert predict_volume(conv, image, logits_only=True)[0, 0, 0, 0] == pytest.approx(3.0)
