"""Mixed real + phantom training (issue 31): dataset shares, no enhancing gradient from real cases, the
normalisation a model records is the one predict applies, and the FLAIR baseline's k from training cases only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.conftest import tiny_train_config

from gdfree.data import ArrayCase, PatchSampler, SamplingRatios, normalise
from gdfree.data.augment import AugmentConfig
from gdfree.data.loader import make_batch
from gdfree.data.sampling import dataset_case_weights
from gdfree.infer.flair_rule import fit_flair_k, flair_rule
from gdfree.train import DatasetSpec, TrainConfig, multitask_loss


def _case(subject: str, dataset: int, enhancing: bool) -> ArrayCase:
    shape = (20, 20, 20)
    brain = np.zeros(shape, bool)
    brain[2:18, 2:18, 2:18] = True
    lesion = np.zeros(shape, bool)
    lesion[4:8, 4:8, 4:8] = True
    lesion[13:16, 13:16, 13:16] = True
    enh = np.zeros(shape, bool)
    enh[5, 5, 5] = True
    image = normalise(np.random.default_rng(len(subject)).random((2, *shape)).astype(np.float32), brain)
    return ArrayCase(subject, subject, None, image, {"enhancing": enh if enhancing else None, "lesion": lesion},
                     brain, np.eye(4), dataset=dataset)  # fmt: skip


def test_dataset_shares_set_the_fraction_of_patches_from_each_dataset():
    cases = [*(_case(f"p{i}", 0, True) for i in range(6)), _case("real", 1, False)]
    weights = dataset_case_weights([c.dataset for c in cases], [None, 0.4])
    assert weights is not None and sum(weights) == pytest.approx(1.0)
    sampler = PatchSampler(cases, ("enhancing", "lesion"), 8, SamplingRatios(0.2, 0.4, 0.4), weights)
    rng = np.random.default_rng(0)
    params = [sampler.sample_params(rng) for _ in range(3000)]
    real = [p for p in params if p.case == 6]
    assert not any(p.category == "active" for p in real)  # no enhancing label: never drawn for active patches
    for cat in ("chronic", "background"):
        of_cat = [p for p in params if p.category == cat]
        assert abs(sum(p.case == 6 for p in of_cat) / len(of_cat) - 0.4) < 0.05
    assert dataset_case_weights([0, 0, 1], [None, None]) is None  # no share: every case equally likely
    by_lesion = PatchSampler(cases, ("enhancing", "lesion"), 8, SamplingRatios(0.0, 1.0, 0.0, unit="lesion"),
                             weights)  # fmt: skip
    drawn = [by_lesion.sample_params(rng).case for _ in range(2000)]
    assert abs(np.mean(np.array(drawn) == 6) - 0.4) < 0.05


def test_shares_are_checked_in_the_config():
    with pytest.raises(ValueError, match="share"):
        DatasetSpec("x", share=1.5)
    with pytest.raises(ValueError, match="sum to 1"):
        TrainConfig(datasets=(DatasetSpec("a", share=0.7), DatasetSpec("b", share=0.6)))
    with pytest.raises(ValueError, match="normalisation"):
        TrainConfig(normalisation="minmax")


def test_a_mixed_batch_carries_no_enhancing_gradient_from_the_real_cases():
    from gdfree.models import MultitaskUNet

    cases = [_case("phantom", 0, True), _case("real", 1, False)]
    sampler = PatchSampler(
        cases, ("enhancing", "lesion"), 8, SamplingRatios(), dataset_case_weights([0, 1], [0.5, 0.5])
    )
    rng = np.random.default_rng(3)
    images, targets, present = make_batch(sampler, AugmentConfig(), 0.0, 8, rng)
    assert present[:, 0].any() and not present[:, 0].all()  # both kinds of sample in the batch
    torch.manual_seed(0)
    net = MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=(2,), num_res_units=1)
    x = torch.from_numpy(images)
    logits = net(x)
    logits.retain_grad()
    loss, _ = multitask_loss(logits, torch.from_numpy(targets), torch.from_numpy(present), ("enhancing", "lesion"),
                             (1.0, 1.0))  # fmt: skip
    loss.backward()
    grad = logits.grad
    real = ~torch.from_numpy(present[:, 0])
    assert torch.count_nonzero(grad[real, 0]) == 0  # the real samples' enhancing output gets nothing
    assert torch.count_nonzero(grad[real, 1]) > 0  # their lesion output does
    assert torch.count_nonzero(grad[~real, 0]) > 0


def test_the_normalisation_stored_with_a_model_is_the_one_predict_applies(tiny_cohort, tmp_path):
    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover
    from gdfree.io.images import read_volume
    from gdfree.predict import predict_dataset
    from gdfree.train import train

    run = tmp_path / "run"
    train(tiny_train_config(tiny_cohort, normalisation="nawm-mode-clip8"), run)
    assert json.loads((run / "model.json").read_text())["normalisation"] == "nawm-mode-clip8"
    model = TrainedModel.load(run)
    assert model.normalisation == "nawm-mode-clip8"
    split = json.loads((run / "split.json").read_text())
    test_id = split["test_cases"][0].split(":")[-1]
    files = next(c for c in discover(tiny_cohort) if c.case_id == test_id)
    out = tmp_path / "pred"
    predict_dataset(run, tiny_cohort, out, case_ids=[test_id])
    written = next(out.rglob(f"{test_id}*lesion*prob*.nii.gz"))
    got = np.asarray(read_volume(written).data, np.float32)

    def lesion_prob(normalisation: str) -> np.ndarray:
        case = load_array_case(files, model.modalities, normalisation=normalisation)
        prob, _ = model.predict(case.image, brain=case.brain, spacing_mm=case.spacing_mm)
        return np.where(case.brain, prob[model.heads.index("lesion")], 0.0)

    assert np.abs(got - lesion_prob("nawm-mode-clip8")).max() < 1e-3
    assert np.abs(got - lesion_prob("zscore-brain-clip5")).max() > 1e-3  # so the check can tell them apart
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "normalisation": "minmax"}))
    with pytest.raises(ValueError, match="normalisation"):
        TrainedModel.load(run)


def test_nawm_normalisation_keeps_white_matter_in_place_whatever_the_lesion_load():
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[4:36, 4:36, 4:36] = True
    flair = np.where(brain, rng.normal(100, 4, shape), 0).astype(np.float32)  # white matter
    flair[4:12] += 30  # grey matter and CSF-ish band
    wm = brain.copy()
    wm[:14] = False
    loaded = flair.copy()
    loaded[20:34, 14:34, 14:34] += 80  # a large confluent lesion load
    wm &= ~(np.indices(shape)[0] >= 20)
    shift = {}
    for name in ("zscore-brain-clip5", "nawm-mode-clip8"):
        a, b = normalise(flair[None], brain, name)[0], normalise(loaded[None], brain, name)[0]
        shift[name] = abs(float(np.median(a[wm]) - np.median(b[wm])))
    assert shift["nawm-mode-clip8"] < 0.15 < shift["zscore-brain-clip5"]


def test_wm_ratio_puts_a_lesion_at_its_ratio_to_white_matter_whatever_else_the_brain_holds():
    rng = np.random.default_rng(2)
    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[4:36, 4:36, 4:36] = True
    lesion = np.zeros(shape, bool)
    lesion[20:26, 20:26, 20:26] = True

    def exam(csf_slabs: int, scale: float) -> np.ndarray:
        """T1w (WM 1, GM 0.7, CSF 0.1, lesion 0.75) and FLAIR (WM 1, GM 1.2, CSF 0.35, lesion 1.5), x ``scale``."""
        t1 = np.where(brain, 1.0, 0.0) + rng.normal(0, 0.02, shape)
        flair = np.where(brain, 1.0, 0.0) + rng.normal(0, 0.03, shape)
        t1[4:10], flair[4:10] = 0.7, 1.2  # grey matter
        t1[10 : 10 + csf_slabs], flair[10 : 10 + csf_slabs] = 0.1, 0.35  # a brain with more or less CSF
        t1[lesion], flair[lesion] = 0.75, 1.5
        return (np.stack([t1, flair]) * scale * brain).astype(np.float32)

    lesion_value: dict[str, list[float]] = {"zscore-brain-clip5": [], "wm-ratio-clip10": []}
    for csf_slabs, scale in ((1, 1.0), (8, 340.0)):
        image = exam(csf_slabs, scale)
        for name, values in lesion_value.items():
            out = normalise(image, brain, name, modalities=("T1w", "FLAIR"))
            values.append(float(np.median(out[1][lesion])))
    assert lesion_value["wm-ratio-clip10"] == pytest.approx([2.0, 2.0], abs=0.05)  # (1.5 / 1 - 1) / 0.25
    assert abs(np.subtract(*lesion_value["zscore-brain-clip5"])) > 0.3  # the brain's spread moves it


def test_the_flair_rule_k_comes_from_the_training_cases_only():
    rng = np.random.default_rng(1)

    def case(contrast: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
        brain = np.zeros((30, 30, 30), bool)
        brain[3:27, 3:27, 3:27] = True
        flair = np.where(brain, rng.normal(100, 5, brain.shape), 0).astype(np.float32)
        lesion = np.zeros(brain.shape, bool)
        lesion[10:16, 10:16, 10:16] = True
        flair[lesion] += contrast
        return flair, brain, lesion, (1.0, 1.0, 1.0)

    faint, bright = case(20.0), case(80.0)
    k_faint, dice_faint = fit_flair_k([faint])
    k_bright, _ = fit_flair_k([bright])
    assert k_faint < k_bright and dice_faint > 0.8  # each fit sees its own training case only
    assert fit_flair_k([faint], ks=(k_faint,))[0] == k_faint
    held_out = flair_rule(bright[0], bright[1], k_faint, (1.0, 1.0, 1.0))
    assert held_out.sum() > 0 and not held_out[~bright[1]].any()
    with pytest.raises(ValueError, match="no training case"):
        fit_flair_k([])
