"""Pair artefacts on training patches: the difference channel stays the difference of the altered prior."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gdfree.data.pair_artefacts import PairArtefacts
from gdfree.train.config import TrainConfig

MODALITIES = ("FLAIR", "priorFLAIR", "diffFLAIR")


def _patch(seed: int = 0, c: float = 0.7, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A FLAIR with a bright 'ventricle' edge, a prior equal to it but for a new lesion, and the difference
    ``c * (FLAIR - prior)`` inside a spherical brain."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3).astype(np.float32)
    brain = ((grid - size / 2 + 0.5) ** 2).sum(0) < (size / 2 - 1) ** 2
    flair = ndimage.gaussian_filter(rng.normal(0, 1, (size,) * 3), 1.5).astype(np.float32)
    flair[: size // 2] += 2.0  # a sharp edge: where a misaligned prior reads as change
    prior = flair.copy()
    flair[14:17, 14:17, 14:17] += 3.0  # a new lesion
    image = np.stack([flair, prior, np.where(brain, c * (flair - prior), 0.0)]).astype(np.float32)
    image[:, ~brain] = 0.0
    return image, brain


def test_only_for_models_with_a_prior_and_a_probability() -> None:
    assert PairArtefacts.for_inputs(0.5, ("T1w", "T2w", "FLAIR")) is None
    assert PairArtefacts.for_inputs(0.0, MODALITIES) is None
    artefacts = PairArtefacts.for_inputs(0.5, MODALITIES)
    assert artefacts is not None and (artefacts.flair, artefacts.prior, artefacts.difference) == (0, 1, 2)
    with pytest.raises(ValueError, match="pair_artefacts"):
        TrainConfig(modalities=list(MODALITIES), pair_artefacts=1.5)


def test_difference_follows_the_altered_prior() -> None:
    image, brain = _patch(c=0.7)
    # the new lesion aside, FLAIR - prior is 0 here, so give the prior its own noise for a spread to measure
    noise = np.random.default_rng(1).normal(0, 0.2, brain.shape).astype(np.float32)
    image[1] = np.where(brain, image[1] + noise, 0.0)
    image[2] = np.where(brain, 0.7 * (image[0] - image[1]), 0.0)
    artefacts = PairArtefacts.for_inputs(1.0, MODALITIES)
    assert artefacts is not None
    scale = artefacts.scale(0, image, brain)
    assert scale == pytest.approx(0.7, rel=1e-3)
    flair, before = image[0].copy(), image[1].copy()
    artefacts.apply(image, brain, scale, np.random.default_rng(2))
    assert np.array_equal(image[0], flair), "the follow-up FLAIR is never altered"
    assert not np.allclose(image[1], before), "probability 1 alters the prior"
    np.testing.assert_allclose(image[2][brain], 0.7 * (image[0] - image[1])[brain], atol=1e-4)
    assert np.all(image[2][~brain] == 0)
    edge = np.abs(image[2][10:14][brain[10:14]]).max()
    assert edge > 0.3, "a misaligned prior reads as change at the sharp edge"


def test_an_exam_without_a_prior_is_left_alone() -> None:
    image, brain = _patch()
    image[1], image[2] = image[0], 0.0  # "nothing changed": the prior is the FLAIR, the difference 0
    artefacts = PairArtefacts.for_inputs(1.0, MODALITIES)
    assert artefacts is not None
    scale = artefacts.scale(3, image, brain)
    assert scale == 0.0 and artefacts.scales == {3: 0.0}
    before = image.copy()
    artefacts.apply(image, brain, scale, np.random.default_rng(0))
    assert np.array_equal(image, before)


def test_draws_follow_the_probability() -> None:
    artefacts = PairArtefacts.for_inputs(0.3, MODALITIES)
    assert artefacts is not None
    rng = np.random.default_rng(0)
    altered = 0
    for _ in range(200):
        image, brain = _patch()
        before = image[1].copy()
        artefacts.apply(image, brain, 0.7, rng)
        altered += not np.array_equal(image[1], before)
    assert 40 <= altered <= 80
