"""The translation framing: its target, the enhancement read from it, its loss, and a short training run."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from gdfree.data.lesion_sim import LesionSimConfig
from gdfree.data.translation import enhancement_probability, enhancement_z, translation_target
from gdfree.train.config import TrainConfig
from gdfree.train.translation import TranslationConfig, translation_loss


def _brain(shape=(20, 20, 20)) -> np.ndarray:
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    return brain


def test_target_is_the_t1w_when_nothing_enhances_whatever_the_post_gd_scale():
    rng = np.random.default_rng(0)
    brain = _brain()
    t1 = np.where(brain, 100 + rng.normal(0, 5, brain.shape), 0)
    target = translation_target(t1, 3.0 * t1, brain)  # another scanner gain, no enhancement
    inside = t1[brain]
    assert np.allclose(target[brain], (inside - inside.mean()) / inside.std(), atol=0.05)
    assert (target[~brain] == 0).all()
    post = 3.0 * t1
    post[8:11, 8:11, 8:11] *= 1.5  # an enhancing lesion
    z = enhancement_z(translation_target(t1, t1, brain), translation_target(t1, post, brain), brain)
    assert z[8:11, 8:11, 8:11].min() > 5 and np.abs(np.median(z[brain])) < 0.1
    p = enhancement_probability(z, (1.0, -3.0))
    assert p[9, 9, 9] > 0.9 and np.median(p[brain]) < 0.1


def test_loss_weights_enhancing_voxels_more():
    t1 = torch.zeros(1, 1, 8, 8, 8)
    target = t1.clone()
    target[..., 2:4, 2:4, 2:4] = 3.0  # enhancement
    cfg = TranslationConfig(ssim_weight=0.0, enhancement_weight=10.0)
    miss_enhancement = translation_loss(t1, target, t1, cfg)  # predicts the pre-contrast image
    miss_elsewhere = translation_loss(target + (target == 0) * 3.0 * (torch.rand_like(t1) < 8 / 504), target, t1, cfg)
    assert miss_enhancement > 5 * miss_elsewhere


def test_config_rules():
    with pytest.raises(ValueError, match="T1w"):
        TrainConfig(modalities=("T2w", "FLAIR"), heads=("t1gd",), head_weights=(1.0,))
    with pytest.raises(ValueError, match="lesion_sim"):
        TrainConfig(heads=("t1gd",), head_weights=(1.0,), lesion_sim=LesionSimConfig(probability=0.5))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_translation_model_trains_and_writes_its_image_on_the_input_grid(tiny_cohort, tmp_path):
    from gdfree.config import load_config
    from gdfree.predict import predict_dataset
    from gdfree.train import train

    spec = {"datasets": [{"path": str(tiny_cohort)}], "heads": ["t1gd"], "head_weights": [1.0],
            "channels": [4, 8], "strides": [2, 2], "patch_size": 16, "batch_size": 2, "max_steps": 30,
            "val_every": 10, "warmup_steps": 5, "augment": 0.0, "split": {"val_fraction": 0.34, "test_fraction": 0.0},
            "translation": {"adversarial_weight": 0.5}}  # fmt: skip
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    cfg = load_config(TrainConfig, tmp_path / "t.yaml")
    train(cfg, tmp_path / "run")
    log = [r for r in _rows(tmp_path / "run" / "log.tsv") if r["loss_t1gd"] not in ("", "n/a")]
    gen = [float(r["loss_t1gd"]) for r in log]
    disc = [float(r["loss_discriminator"]) for r in log]
    assert gen[-1] < gen[0]  # the synthesis loss falls
    assert max(disc) - min(disc) > 1e-3  # and the discriminator's moves
    rows = predict_dataset(tmp_path / "run", tiny_cohort, tmp_path / "pred", allow_training_cases=True)
    assert all(r.get("status") != "failed" for r in rows)
    first = sorted((tmp_path / "pred").glob("sub-*/anat/*_desc-synthT1gd_T1w.nii.gz"))
    assert len(first) == 3
    subject = first[0].name.split("_")[0]
    t1 = nib.load(next(tiny_cohort.glob(f"{subject}/anat/{subject}_T1w.nii.gz")))
    synth = nib.load(first[0])
    assert synth.shape == t1.shape and np.allclose(synth.affine, t1.affine)
    data = np.asarray(synth.dataobj)
    raw = np.asarray(t1.dataobj)
    assert np.isfinite(data).all() and abs(np.median(data[raw > 0]) / np.median(raw[raw > 0]) - 1) < 0.5


def test_separable_ssim_equals_monai():
    from monai.metrics.regression import compute_ssim_and_cs

    from gdfree.train.translation import _ssim

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 16, 16, 16, generator=gen)
    y = x + 0.5 * torch.randn(x.shape, generator=gen)
    ref, _ = compute_ssim_and_cs(x, y, spatial_dims=3, kernel_size=(7,) * 3, kernel_sigma=(1.5,) * 3,
                                 data_range=torch.tensor(20.0), kernel_type="gaussian")  # fmt: skip
    assert float(_ssim(x, y, 20.0)) == pytest.approx(float(ref.mean()), abs=1e-5)


def test_calibration_refuses_an_inverted_enhancement_map():
    from gdfree.data.translation import fit_enhancement_calibration

    rng = np.random.default_rng(0)
    brain = _brain()
    label = np.zeros(brain.shape, bool)
    label[8:11, 8:11, 8:11] = True
    z = rng.normal(0, 1, brain.shape) + 4.0 * label
    a, _ = fit_enhancement_calibration([z], [label], [brain], rng)
    assert a > 0
    with pytest.raises(ValueError, match="slope"):
        fit_enhancement_calibration([-z], [label], [brain], rng)
