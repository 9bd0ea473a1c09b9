"""CarveMix: the label travels with the tissue, nothing outside the pasted region changes, contrast kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdfree.data.lesion_sim import carved_region, carvemix, sample_carvemix

SPACING = (1.0, 1.0, 1.0)


def _cases() -> tuple[np.ndarray, dict, np.ndarray, dict, np.ndarray]:
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2, 24, 24, 24)).astype(np.float32)
    lesion = np.zeros((24, 24, 24), bool)
    lesion[10:13, 10:14, 10:12] = True
    enhancing = np.zeros_like(lesion)
    enhancing[11, 11, 10] = True
    source[:, lesion] += 4.0  # bright lesion
    target = rng.normal(size=(2, 24, 24, 24)).astype(np.float32) + np.array([2.0, -1.0])[:, None, None, None]
    brain = np.zeros((24, 24, 24), bool)
    brain[3:21, 3:21, 3:21] = True
    empty = np.zeros_like(lesion)
    return source, {"lesion": lesion, "enhancing": enhancing}, target, {"lesion": empty, "enhancing": empty}, brain


def test_the_label_is_carried_with_the_tissue_and_nothing_else_changes():
    source, src_labels, target, tgt_labels, brain = _cases()
    params = sample_carvemix(src_labels["lesion"], brain, SPACING, np.random.default_rng(3), max_margin_mm=2.0)
    assert params == json.loads(json.dumps(params))
    image, labels, pasted = carvemix(params, source, src_labels, target, tgt_labels, brain, SPACING)
    offset = np.asarray(params["offset_vox"])
    moved = np.zeros_like(src_labels["lesion"])
    moved[tuple((np.argwhere(src_labels["lesion"]) + offset).T)] = True
    assert np.array_equal(labels["lesion"], moved)  # the whole lesion, shifted
    assert labels["enhancing"].sum() == 1 and labels["enhancing"][tuple(np.array([11, 11, 10]) + offset)]
    assert np.array_equal(image[:, ~pasted], target[:, ~pasted])  # untouched outside the region
    assert brain[pasted].all() and pasted.sum() > src_labels["lesion"].sum()  # lesion and a margin
    # the images changed exactly where a label says a lesion now is, and around it
    changed = np.any(image != target, axis=0)
    assert changed[labels["lesion"]].all() and not changed[~pasted].any()
    # contrast kept: the lesion stands 4 above its carved surroundings, whatever the target's level
    region, lesion = carved_region(src_labels["lesion"], params["lesion_id"], params["margin_mm"], SPACING)
    margin_dst = pasted & ~labels["lesion"]
    for c in range(2):
        contrast = np.median(image[c][labels["lesion"]]) - np.median(image[c][margin_dst])
        source_contrast = np.median(source[c][lesion]) - np.median(source[c][region & ~lesion])
        assert contrast == pytest.approx(source_contrast, abs=1e-5)
        assert np.median(image[c][margin_dst]) == pytest.approx(np.median(target[c][margin_dst]), abs=1e-5)


def test_replay_and_refusals():
    source, src_labels, target, tgt_labels, brain = _cases()
    params = sample_carvemix(src_labels["lesion"], brain, SPACING, np.random.default_rng(5))
    assert params == sample_carvemix(src_labels["lesion"], brain, SPACING, np.random.default_rng(5))
    first = carvemix(params, source, src_labels, target, tgt_labels, brain, SPACING)
    again = carvemix(params, source, src_labels, target, tgt_labels, brain, SPACING)
    assert np.array_equal(first[0], again[0])
    with pytest.raises(ValueError, match="no lesion"):
        sample_carvemix(np.zeros_like(brain), brain, SPACING, np.random.default_rng(0))
    with pytest.raises(ValueError, match="inside the target brain"):
        carvemix({**params, "offset_vox": [15, 0, 0]}, source, src_labels, target, tgt_labels, brain, SPACING)
    with pytest.raises(ValueError, match="lesion_id"):
        carved_region(src_labels["lesion"], 2, 1.0, SPACING)
