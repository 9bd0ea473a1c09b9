"""Replayable augmentation: identity parameters change nothing; logged parameters replay exactly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from gdfree.data.augment import TRANSFORMS, AugmentConfig, apply, augment, sample_params

ALL = AugmentConfig(**{name: 1.0 for name in TRANSFORMS}, translation_mm=2.0)
INTENSITY = ("motion", "ghosting", "spike", "bias", "gamma", "noise", "anisotropy")


def _patch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(2, 16, 16, 16)).astype(np.float32) + 3.0
    target = np.zeros((2, 16, 16, 16), np.float32)
    target[0, 3:7, 4:9, 5:8] = 1
    target[1, 10:13, 2:5, 9:14] = 1
    return image, target


def test_identity_parameters_change_nothing():
    image, target = _patch()
    assert sample_params(ALL, 0.0, np.random.default_rng(0)) == []
    off = AugmentConfig(**{name: 0.0 for name in TRANSFORMS})
    assert sample_params(off, 1.0, np.random.default_rng(0)) == []
    out_image, out_target = apply([], image, target)
    assert np.array_equal(out_image, image) and np.array_equal(out_target, target)
    for p in ({"name": "flip", "axes": []}, {"name": "affine", "scales": [1, 1, 1], "degrees": [0, 0, 0],
                                             "translation": [0, 0, 0]}):  # fmt: skip
        out_image, out_target = apply([p], image, target)
        np.testing.assert_allclose(out_image, image, atol=1e-5)
        assert np.array_equal(out_target, target)


def test_logged_parameters_replay_exactly_whatever_the_global_generators():
    image, target = _patch()
    params = sample_params(ALL, 1.0, np.random.default_rng(7))
    assert [p["name"] for p in params] == list(TRANSFORMS)
    assert params == sample_params(ALL, 1.0, np.random.default_rng(7))
    logged = json.loads(json.dumps(params))  # what a log keeps
    torch.manual_seed(1)
    first = apply(params, image, target)
    torch.manual_seed(2)
    again = apply(logged, image, target)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.allclose(first[0], image)
    out_image, _, drawn = augment(ALL, 1.0, image, target, np.random.default_rng(7))
    assert drawn == params and np.array_equal(out_image, first[0])


@pytest.mark.parametrize("name", INTENSITY)
def test_an_intensity_transform_changes_the_image_and_no_label(name: str):
    image, target = _patch()
    cfg = dataclasses.replace(AugmentConfig(**{n: 0.0 for n in TRANSFORMS}), **{name: 1.0})
    params = sample_params(cfg, 1.0, np.random.default_rng(3))
    assert [p["name"] for p in params] == [name]
    out_image, out_target = apply(params, image, target)
    assert out_image.shape == image.shape and not np.allclose(out_image, image)
    assert np.array_equal(out_target, target)


def test_spatial_transforms_move_the_labels_with_the_image():
    image, target = _patch()
    image[:, target[0] > 0] = 50.0  # lesion 0 is bright in both channels
    flipped_image, flipped_target = apply([{"name": "flip", "axes": [0]}], image, target)
    assert np.array_equal(flipped_target, target[:, ::-1]) and np.array_equal(flipped_image, image[:, ::-1])
    params = [{"name": "affine", "scales": [1.1, 0.9, 1.0], "degrees": [0.0, 0.0, 15.0],
               "translation": [1.0, 0.0, 0.0]}]  # fmt: skip
    moved_image, moved_target = apply(params, image, target)
    assert not np.array_equal(moved_target, target)
    inside = moved_target[0] > 0
    assert inside.sum() > 20 and moved_image[0][inside].mean() > 25  # the label still covers the bright lesion


def test_bad_augmentation_values_are_named():
    with pytest.raises(ValueError, match=r"augmentation\.noise"):
        AugmentConfig(noise=1.5)
    with pytest.raises(ValueError, match=r"augmentation\.degrees"):
        AugmentConfig(degrees=-1)
    with pytest.raises(ValueError, match="unknown transform"):
        apply([{"name": "swirl"}], *_patch())


def test_lesion_contrast_scaling_fades_lesions_only_and_replays():
    from gdfree.data.augment import AugmentConfig, apply, sample_params, scale_lesion_contrast

    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 0.1, (2, 16, 16, 16)).astype(np.float32)
    target = np.zeros((2, 16, 16, 16), np.float32)
    target[1, 6:10, 6:10, 6:10] = 1.0
    image[:, 6:10, 6:10, 6:10] += 2.0
    faded = scale_lesion_contrast(image, target > 0.5, 0.5)
    inside = target[1] > 0.5
    assert np.median(faded[:, inside]) == pytest.approx(1.0, abs=0.15)  # half of +2 over the surroundings
    far = np.ones((16, 16, 16), bool)
    far[3:13, 3:13, 3:13] = False
    assert np.array_equal(faded[:, far], image[:, far])
    assert scale_lesion_contrast(image, np.zeros_like(target, bool), 0.5) is image
    cfg = AugmentConfig(flip=0, affine=0, bias=0, noise=0, lesion_contrast=1.0, lesion_contrast_min=0.3)
    params = sample_params(cfg, 1.0, np.random.default_rng(1))
    assert [p["name"] for p in params] == ["lesion_contrast"] and 0.3 <= params[0]["factor"] <= 1.0
    a, ta = apply(params, image, target)
    b, _ = apply(params, image, target)
    assert np.array_equal(a, b) and np.array_equal(ta, target)
    off = sample_params(AugmentConfig(lesion_contrast=0.0), 1.0, np.random.default_rng(1))
    assert all(p["name"] != "lesion_contrast" for p in off)
    with pytest.raises(ValueError, match="lesion_contrast_min"):
        AugmentConfig(lesion_contrast_min=1.5)
