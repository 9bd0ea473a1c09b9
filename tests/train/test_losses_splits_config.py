"""Masked losses, patient splits and the training config's refusals."""

from __future__ import annotations

import pytest
import torch

from gdfree.errors import InputRoleError
from gdfree.models import MultitaskUNet
from gdfree.train import DatasetSpec, SplitConfig, TrainConfig, multitask_loss, split_patients


def test_a_missing_label_gives_its_head_no_gradient():
    torch.manual_seed(0)
    net = MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=(2,), num_res_units=1)
    x = torch.randn(3, 2, 8, 8, 8)
    targets = (torch.rand(3, 2, 8, 8, 8) > 0.8).float()
    present = torch.tensor([[False, True], [False, True], [False, True]])  # no sample has an enhancing label
    loss, parts = multitask_loss(net(x), targets, present, ("enhancing", "lesion"), (1.0, 1.0))
    loss.backward()
    grad = net.head.weight.grad
    assert grad is not None
    assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(net.head.bias.grad[0]) == 0
    assert torch.count_nonzero(grad[1]) > 0
    assert parts["enhancing"] != parts["enhancing"]  # NaN: not computed


def test_a_label_present_in_one_sample_only_uses_that_sample():
    logits = torch.zeros(2, 1, 4, 4, 4, requires_grad=True)
    targets = torch.ones(2, 1, 4, 4, 4)
    multitask_loss(logits, targets, torch.tensor([[True], [False]]), ("lesion",), (1.0,))[0].backward()
    assert torch.count_nonzero(logits.grad[1]) == 0 and torch.count_nonzero(logits.grad[0]) > 0
    with pytest.raises(ValueError, match="loss"):
        multitask_loss(logits, targets, torch.ones(2, 1, dtype=torch.bool), ("lesion",), (1.0,), kind="hinge")


def test_patient_splits():
    patients = [f"p{i:02d}" for i in range(20)]
    parts = split_patients(patients, SplitConfig(val_fraction=0.25, test_fraction=0.2, seed=1))
    assert (len(parts["test"]), len(parts["val"]), len(parts["train"])) == (4, 4, 12)
    assert sorted(parts["test"] + parts["val"] + parts["train"]) == patients
    assert split_patients(patients, SplitConfig(seed=1)) == split_patients(patients, SplitConfig(seed=1))
    folds = [split_patients(patients, SplitConfig(test_fraction=0.0, n_folds=4, fold=k))["val"] for k in range(4)]
    assert sorted(p for f in folds for p in f) == patients
    explicit = split_patients(patients, SplitConfig(test_subjects=("p03", "p07")))
    assert explicit["test"] == ["p03", "p07"] and "p03" not in explicit["train"]
    with pytest.raises(ValueError, match="not in the training data"):
        split_patients(patients, SplitConfig(test_subjects=("p99",)))
    named = split_patients(patients, SplitConfig(test_subjects=("p00",), val_subjects=("p01", "p02"),
                                                 train_subjects=("p05", "p03", "p04")))  # fmt: skip
    assert named["val"] == ["p01", "p02"] and named["train"] == ["p03", "p04", "p05"]
    assert named["unused"] == patients[6:] and named["test"] == ["p00"]
    with pytest.raises(ValueError, match="two of"):
        split_patients(patients, SplitConfig(val_subjects=("p01",), train_subjects=("p01", "p02")))
    with pytest.raises(ValueError, match=r"split\.train_subjects: not in"):
        split_patients(patients, SplitConfig(train_subjects=("p99",)))


def test_config_refuses_post_contrast_inputs_outside_oracle():
    with pytest.raises(InputRoleError):
        TrainConfig(datasets=(DatasetSpec("x"),), modalities=("T1w", "FLAIR", "T1gd"))
    oracle = TrainConfig(datasets=(DatasetSpec("x"),), modalities=("T1w", "FLAIR", "T1gd"), oracle=True)
    assert oracle.oracle
    with pytest.raises(ValueError, match="oracle"):
        TrainConfig(datasets=(DatasetSpec("x"),), oracle=True)
    with pytest.raises(ValueError, match="patch_size"):
        TrainConfig(patch_size=40)
    with pytest.raises(ValueError, match="keep"):
        TrainConfig(keep="median")
    with pytest.raises(ValueError, match="labels"):
        DatasetSpec("x", labels=("tumour",))


def test_derangement_has_no_fixed_point():
    import numpy as np

    from gdfree.train.splits import derangement

    rng = np.random.default_rng(0)
    for n in (2, 3, 7):
        for _ in range(20):
            order = derangement(n, rng)
            assert sorted(order.tolist()) == list(range(n)) and not np.any(order == np.arange(n))
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, rng)
