"""Predicted lesions that white matter does not surround are dropped; the fraction is fitted on training cases."""

from __future__ import annotations

import numpy as np
import pytest

from gdfree.data.cases import white_matter
from gdfree.infer.tissue_filter import drop_outside_white_matter, fit_min_white_matter, white_matter_shell


def _head() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """T1w of a white-matter core (1000) in grey matter (700) with CSF (300) outside; a lesion inside the white
    matter (T1w-dark, 800) and a bright false spot in the grey matter."""
    rng = np.random.default_rng(0)
    t1 = np.full((40, 40, 40), 300.0)
    t1[4:36, 4:36, 4:36] = 700.0
    t1[10:30, 10:30, 10:30] = 1000.0
    t1[18:21, 18:21, 18:21] = 800.0  # the lesion
    t1 += rng.normal(0, 10, t1.shape)
    brain = np.zeros(t1.shape, bool)
    brain[2:38, 2:38, 2:38] = True
    ref = np.zeros(t1.shape, bool)
    ref[18:21, 18:21, 18:21] = True
    pred = ref.copy()
    pred[5:7, 20:22, 20:22] = True  # in the cortex
    wm = white_matter(t1.astype(np.float32)[None], brain, ("T1w",))
    assert wm is not None
    return pred, wm, brain, ref


def test_a_lesion_in_white_matter_is_kept_and_a_cortical_spot_dropped():
    pred, wm, brain, ref = _head()
    labels, fractions = white_matter_shell(pred, wm, brain)
    assert labels.max() == 2 and len(fractions) == 2
    assert fractions[labels[19, 19, 19] - 1] == 1.0  # the lesion: white matter all round
    assert fractions[labels[5, 20, 20] - 1] == 0.0  # the cortical spot
    assert np.array_equal(drop_outside_white_matter(pred, wm, brain, 0.5), ref)
    assert np.array_equal(drop_outside_white_matter(pred, wm, brain, 0.0), pred)  # 0 keeps everything
    assert not drop_outside_white_matter(np.zeros_like(pred), wm, brain, 0.5).any()


def test_the_fraction_comes_from_the_training_cases_only():
    pred, wm, brain, ref = _head()
    fraction, score = fit_min_white_matter([(pred, wm, brain, ref)])
    assert fraction == 0.1 and score == 1.0  # the smallest fraction that drops the cortical spot
    only_cortex = np.zeros_like(ref)
    only_cortex[5:7, 20:22, 20:22] = True  # a training case whose reference lesion is the cortical one
    assert fit_min_white_matter([(pred, wm, brain, only_cortex)])[0] == 0.0  # dropping it would lose Dice
    with pytest.raises(ValueError, match="no training case"):
        fit_min_white_matter([])
    with pytest.raises(ValueError, match="differ"):
        white_matter_shell(pred[:-1], wm, brain)
