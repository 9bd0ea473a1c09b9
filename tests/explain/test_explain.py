"""Explanations: exact values on a linear model, ranking on a tiny cohort, profiles, sanity checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gdfree.data.cases import ArrayCase, load_array_case
from gdfree.explain import (
    find_lesions,
    lesion_maps,
    lesion_profile,
    occlusion_importance,
    permutation_importance,
    randomised_copy,
    rank_correlation,
    signed_distance_mm,
    summarise,
)
from gdfree.explain.importance import ig_importance, occluded
from gdfree.io.adapters import discover
from gdfree.metrics.lesions import DetectionRule, label_lesions

MODALITIES = ("T1w", "T2w", "FLAIR")


class Linear(nn.Module):
    """enhancing logit = sum_c w_c x_c (a 1x1x1 convolution): every attribution is known in closed form."""

    divisor = 1

    def __init__(self, weights: tuple[float, ...]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(len(weights), 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :, 0, 0, 0] = torch.tensor(weights)
        self.encoder = nn.ModuleList([self.conv])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.fixture(scope="module")
def cases(tiny_cohort: Path) -> list[ArrayCase]:
    return [load_array_case(f, MODALITIES, ("enhancing", "lesion")) for f in discover(tiny_cohort)]


def _lesions(case: ArrayCase) -> tuple[np.ndarray, int]:
    return label_lesions(case.labels["lesion"], case.spacing_mm, 26, 0.0)


def test_occlusion_and_ig_match_the_closed_form_of_a_linear_model(cases: list[ArrayCase]):
    w = (0.5, -0.25, 2.0)
    model = Linear(w)
    case = cases[0]
    labels, n = _lesions(case)
    assert n >= 2
    rows = occlusion_importance(model, case, labels, n, MODALITIES, modes=("mean", "zeros"), raw_zero=case.raw_zero)
    for row in rows:
        c = MODALITIES.index(row["modality"])
        region = labels == row["lesion_id"]
        inside = case.image[c][region].mean()
        replaced = case.image[c][case.brain].mean() if row["method"] == "occlusion-mean" else case.raw_zero[c]
        assert row["importance"] == pytest.approx(w[c] * (inside - replaced), rel=1e-4, abs=1e-4)
    region = labels == 1
    maps = lesion_maps(model, case, region, methods=("ig", "gradcam", "occlusion"), crop=16, steps=8, block=2,
                       occlusion_reach=8)  # fmt: skip
    sums = maps["ig"].reshape(3, -1).sum(axis=1)
    expected = [w[c] * case.image[c][region].mean() for c in range(3)]
    assert sums == pytest.approx(expected, rel=1e-3, abs=1e-4)  # integrated gradients are exact for a linear map
    assert float(maps["ig_delta"]) < 1e-3
    rows = ig_importance(model, case, labels, 1, MODALITIES, crop=16, steps=8)
    assert [r["importance"] for r in rows] == pytest.approx(expected, rel=1e-3, abs=1e-4)
    assert float(maps["target"]) == pytest.approx(sum(expected), rel=1e-4, abs=1e-4)
    assert maps["ig"].shape == (3, *case.brain.shape) and maps["gradcam"].shape == case.brain.shape
    # occlusion with blocks: a FLAIR block inside the lesion is evidence for enhancement (w > 0, lesion bright)
    assert maps["occlusion"][2][region].sum() > 0 and np.all(maps["occlusion"][:, ~case.brain] == 0)


def test_replacements_are_what_they_say(cases: list[ArrayCase]):
    case = cases[0]
    noise = occluded(case, 1, "noise", rng=np.random.default_rng(3))
    assert abs(noise[1][case.brain].mean()) < 0.05 and abs(noise[1][case.brain].std() - 1) < 0.05
    assert np.array_equal(noise[0], case.image[0]) and np.array_equal(noise[2], case.image[2])
    blur = occluded(case, 2, "blur", blur_mm=8.0)
    assert blur[2][case.brain].std() < case.image[2][case.brain].std()
    assert np.all(blur[2][~case.brain] == case.image[2][~case.brain])
    with pytest.raises(ValueError, match="raw_zero"):
        occluded(case, 0, "zeros")
    with pytest.raises(ValueError, match="occlusion mode"):
        occluded(case, 0, "shuffle")


def test_the_dominant_modality_ranks_first_with_a_separate_ci(cases: list[ArrayCase]):
    model = Linear((0.1, 0.1, 2.0))  # the enhancing logit is carried by FLAIR
    lesions = [_lesions(c) for c in cases]
    rows = []
    for case, (labels, n) in zip(cases, lesions, strict=True):
        rows += occlusion_importance(model, case, labels, n, MODALITIES, modes=("mean", "noise"))
    rows += permutation_importance(model, cases, lesions, MODALITIES, repeats=2)
    summary = summarise(rows, n_boot=500)
    assert {s["method"] for s in summary} == {"occlusion-mean", "occlusion-noise", "permutation"}
    for method in ("occlusion-mean", "occlusion-noise"):
        table = {s["modality"]: s for s in summary if s["method"] == method}
        assert table["FLAIR"]["rank"] == 1 and table["FLAIR"]["patients"] == 3
        assert all(table["FLAIR"]["ci_low"] > table[m]["ci_high"] for m in ("T1w", "T2w"))
        assert sum(s["share"] for s in table.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        permutation_importance(model, cases[:1], lesions[:1], MODALITIES)


def test_lesions_from_the_model_or_the_reference(cases: list[ArrayCase]):
    case = cases[0]
    prob = np.where(case.labels["lesion"], 0.9, 0.0).astype(np.float32)
    rule = DetectionRule.preset("msseg")
    labels, found = find_lesions(case, prob, 0.5, rule, "predicted", case.labels["enhancing"])
    assert found and all(f.predicted_active for f in found) and labels.max() == len(found)
    assert any(f.reference_active for f in found) == bool(case.labels["enhancing"].any())
    labels, found = find_lesions(case, prob, 0.5, rule, "lesion-mask", case.labels["enhancing"], case.labels["lesion"])
    assert len(found) == label_lesions(case.labels["lesion"], case.spacing_mm, 6, 3.0)[1]
    with pytest.raises(ValueError, match="no enhancing mask"):
        find_lesions(case, prob, 0.5, rule, "reference", None)
    with pytest.raises(ValueError, match="no lesion mask"):
        find_lesions(case, prob, 0.5, rule, "lesion-mask", None, None)


def test_profiles_peak_at_a_planted_ring():
    lesion = np.zeros((30, 30, 30), bool)
    lesion[12:18, 12:18, 12:18] = True
    distance = signed_distance_mm(lesion, (1.0, 1.0, 1.0))
    assert distance[15, 15, 15] < 0 and distance[11, 15, 15] == pytest.approx(1.0)
    assert distance[12, 15, 15] == pytest.approx(-1.0)  # the rim of the lesion is one voxel inside
    ring = ((distance > 2.0) & (distance <= 3.0)).astype(np.float32)
    bins = (-4.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0)
    profile = lesion_profile(ring, lesion, np.ones_like(lesion), (1.0, 1.0, 1.0), bins)
    assert int(np.nanargmax(profile)) == 3 and profile[3] == pytest.approx(1.0) and profile[0] == 0


def test_randomisation_checks_can_pass_and_fail(cases: list[ArrayCase]):
    from gdfree.models.unet import MultitaskUNet

    torch.manual_seed(0)
    model = MultitaskUNet(3, channels=(4, 8), strides=(2, 2), num_res_units=1, full_res_channels=4).eval()
    before = [p.detach().clone() for p in model.parameters()]
    other = randomised_copy(model, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # original untouched
    assert not all(torch.equal(a, b) for a, b in zip(before, other.parameters(), strict=True))
    case = cases[0]
    labels, _ = _lesions(case)
    region = labels == 1
    maps = lesion_maps(model, case, region, methods=("ig",), crop=16, steps=8)["ig"]
    again = lesion_maps(model, case, region, methods=("ig",), crop=16, steps=8)["ig"]
    assert rank_correlation(maps, again) == pytest.approx(1.0)  # the same model: the check would fail
    rng = np.random.default_rng(0)
    noise = np.where(maps != 0, rng.standard_normal(maps.shape), 0.0)
    assert abs(rank_correlation(maps, noise)) < 0.1
    with pytest.raises(ValueError, match="shapes differ"):
        rank_correlation(maps, maps[:1])


def test_label_randomisation_deranges_the_labels(cases: list[ArrayCase]):
    import dataclasses

    from gdfree.train.loop import randomise_labels

    copies = [dataclasses.replace(c, labels=dict(c.labels)) for c in cases]
    randomise_labels(copies, "enhancing", seed=0)
    for i, c in enumerate(copies):
        assert c.labels["enhancing"] is not cases[i].labels["enhancing"]
        assert any(c.labels["enhancing"] is o.labels["enhancing"] for o in cases)
    odd = dataclasses.replace(cases[0], brain=cases[0].brain[:-1], labels=dict(cases[0].labels))
    with pytest.raises(ValueError, match="one grid"):
        randomise_labels([odd, copies[1]], "enhancing", seed=0)


def test_summaries_per_group_and_the_separation():
    rows = []
    for case, (active, inactive) in {"a": (5.0, 1.0), "b": (7.0, 1.0), "c": (6.0, 2.0)}.items():
        for modality, scale in (("FLAIR", 1.0), ("T1w", 0.1)):
            rows.append({"case_id": case, "lesion_id": 1, "modality": modality, "method": "m",
                         "importance": active * scale, "group": "active"})  # fmt: skip
            rows.append({"case_id": case, "lesion_id": 2, "modality": modality, "method": "m",
                         "importance": inactive * scale, "group": "inactive"})  # fmt: skip
    plain = {(r["group"], r["modality"]): r for r in summarise(rows, n_boot=300)}
    assert plain[("active", "FLAIR")]["mean"] == pytest.approx(6.0) and plain[("active", "FLAIR")]["rank"] == 1
    assert plain[("inactive", "T1w")]["mean"] == pytest.approx(4.0 / 30)
    sep = {r["modality"]: r for r in summarise(rows, contrast=("active", "inactive"), n_boot=300)}
    assert sep["FLAIR"]["mean"] == pytest.approx(6.0 - 4.0 / 3) and sep["FLAIR"]["group"] == "active - inactive"
    assert sep["FLAIR"]["rank"] == 1 and sep["FLAIR"]["ci_low"] > sep["T1w"]["ci_high"]
    assert sep["FLAIR"]["ci_low"] <= sep["FLAIR"]["mean"] <= sep["FLAIR"]["ci_high"]
