"""Lesion simulation: CarveMix carries the label with the tissue; an inserted lesion is labelled exactly where
the images changed, with the case's own contrast; removal clears labels where it inpaints; all replayable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdfree.data.lesion_sim import (
    LesionSimConfig,
    carved_region,
    carvemix,
    fit_lesion_model,
    insert_lesion,
    remove_lesion,
    sample_carvemix,
    sample_insertion,
    sample_removal,
    simulate,
)

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


def _case_with_lesions() -> tuple[np.ndarray, dict, np.ndarray]:
    """A 2-channel 40^3 case at 1 mm: 3 lesions bright on channel 0 (+3) and dark on channel 1 (-2); one active
    (brighter, +5 on channel 0)."""
    rng = np.random.default_rng(1)
    image = rng.normal(scale=0.3, size=(2, 40, 40, 40)).astype(np.float32)
    brain = np.zeros((40, 40, 40), bool)
    brain[2:38, 2:38, 2:38] = True
    lesion = np.zeros_like(brain)
    enhancing = np.zeros_like(brain)
    for corner in ((6, 6, 6), (6, 26, 6), (26, 6, 26)):
        sl = tuple(slice(c, c + 4) for c in corner)
        lesion[sl] = True
    enhancing[26:30, 6:10, 26:30] = True
    image[0][lesion] += 3.0
    image[0][enhancing] += 2.0
    image[1][lesion] -= 2.0
    return image, {"lesion": lesion, "enhancing": enhancing}, brain


def test_fitted_model_holds_the_cases_own_contrasts():
    image, labels, brain = _case_with_lesions()
    model = fit_lesion_model(image, labels["lesion"], brain, SPACING, labels["enhancing"])
    assert model.chronic.shape == (2, 2) and model.active.shape == (1, 2)
    assert np.allclose(model.chronic, [3.0, -2.0], atol=0.25)
    assert np.allclose(model.active, [5.0, -2.0], atol=0.25)
    with pytest.raises(ValueError, match="no lesion"):
        fit_lesion_model(image, np.zeros_like(brain), brain, SPACING)


def test_an_inserted_lesion_is_labelled_exactly_where_the_images_changed():
    image, labels, brain = _case_with_lesions()
    model = fit_lesion_model(image, labels["lesion"], brain, SPACING, labels["enhancing"])
    placement = brain & ~labels["lesion"]
    for seed in range(6):
        params = sample_insertion(model, placement, SPACING, np.random.default_rng(seed), active_probability=0.5)
        assert params == json.loads(json.dumps(params))
        out, new, mask = insert_lesion(params, image, labels, SPACING, model.spread)
        changed = np.any(out != image, axis=0)
        added = new["lesion"] & ~labels["lesion"]
        assert np.array_equal(changed, added) and np.array_equal(added, mask) and mask.sum() > 0
        assert np.array_equal(new["enhancing"] & ~labels["enhancing"], mask if params["active"] else mask & False)
        expected = np.asarray(params["contrast"])
        assert np.sign(out[0][mask].mean() - image[0][mask].mean()) == np.sign(expected[0]) == 1
        assert np.sign(out[1][mask].mean() - image[1][mask].mean()) == np.sign(expected[1]) == -1
        again = insert_lesion(params, image, labels, SPACING, model.spread)
        assert np.array_equal(again[0], out)  # replayed from its parameters
    assert {"enhancing", "lesion"} == set(new)


def test_removal_inpaints_from_surroundings_and_clears_the_labels_there():
    image, labels, brain = _case_with_lesions()
    params = sample_removal(labels["lesion"], SPACING, np.random.default_rng(0))
    out, new, filled = remove_lesion(params, image, labels, brain, SPACING)
    changed = np.any(out != image, axis=0)
    assert changed.any() and not changed[~filled].any()  # nothing changes outside the filled region
    removed = labels["lesion"] & ~new["lesion"]
    assert removed.sum() == 64 and filled[removed].all() and not new["lesion"][filled].any()
    assert new["lesion"].sum() == labels["lesion"].sum() - 64  # the other lesions are kept
    assert abs(float(out[0][removed].mean())) < 0.3 and abs(float(out[1][removed].mean())) < 0.3  # like the tissue
    assert np.array_equal(remove_lesion(params, image, labels, brain, SPACING)[0], out)


def test_simulate_draws_one_replayable_operation_per_patch():
    image, labels, brain = _case_with_lesions()
    model = fit_lesion_model(image, labels["lesion"], brain, SPACING, labels["enhancing"])
    cfg = LesionSimConfig(probability=1.0)
    ops = set()
    for seed in range(12):
        out, new, record = simulate(cfg, np.random.default_rng(seed), image, labels, brain, SPACING, model=model,
                                    donor=(image, labels))  # fmt: skip
        assert record is not None and record == json.loads(json.dumps(record))
        ops.add(record["op"])
        again = simulate(cfg, np.random.default_rng(seed), image, labels, brain, SPACING, model=model,
                         donor=(image, labels))  # fmt: skip
        assert np.array_equal(again[0], out) and all(np.array_equal(again[1][k], new[k]) for k in new)
    assert ops == {"carvemix", "insert", "remove"}
    off = simulate(LesionSimConfig(), np.random.default_rng(0), image, labels, brain, SPACING, model=model)
    assert off[2] is None and off[0] is image
    with pytest.raises(ValueError, match="lesion_sim"):
        LesionSimConfig(probability=2.0)


def test_new_lesions_go_only_where_placement_allows():
    image, labels, brain = _case_with_lesions()
    model = fit_lesion_model(image, labels["lesion"], brain, SPACING, labels["enhancing"])
    allowed = np.zeros_like(brain)
    allowed[20:38, 20:38, 2:20] = True
    cfg = LesionSimConfig(probability=1.0, carvemix=1.0, insert=1.0, remove=0.0)
    for seed in range(8):
        out, _, record = simulate(cfg, np.random.default_rng(seed), image, labels, brain, SPACING, model=model,
                                    donor=(image, labels), placement=allowed)  # fmt: skip
        if record is None:
            continue
        changed = np.any(out != image, axis=0)
        assert changed.any() and not changed[~allowed].any(), record["op"]
