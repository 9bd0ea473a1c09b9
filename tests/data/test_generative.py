"""Generative synthesis: tissue label maps keep T1w order, the cVAE's and cGAN's losses fall on a tiny cohort,
the quality checks catch a copying generator, synthetic patches are labelled by their label maps, and a
training run with a generator, lesion simulation and augmentation goes through."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from gdfree.data.cases import load_array_case
from gdfree.data.generative import (
    GenerativeConfig,
    LabelledPatches,
    Synthesiser,
    add_lesions,
    case_label_map,
    collect_patches,
    quality_report,
    train_generator,
)
from gdfree.data.sampling import PatchSampler, SamplingRatios
from gdfree.io.adapters import discover

MODALITIES = ("T1w", "T2w", "FLAIR")


@pytest.fixture(scope="module")
def cases(tiny_cohort: Path):
    return [load_array_case(c, MODALITIES, ("enhancing", "lesion")) for c in discover(tiny_cohort)]


@pytest.fixture(scope="module")
def patches(cases) -> LabelledPatches:
    maps = [case_label_map(c.image, c.brain, c.labels, 0) for c in cases]
    return collect_patches(cases, maps, ("enhancing", "lesion"), 16, 48, np.random.default_rng(0))


def test_label_map_orders_tissues_by_t1w_and_keeps_lesions(cases):
    case = cases[0]
    maps = case_label_map(case.image, case.brain, case.labels, 0)
    t1 = case.image[0]
    means = [float(t1[maps == v].mean()) for v in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # CSF < GM < WM on T1w
    assert (maps[case.labels["lesion"] & case.brain] >= 4).all() and not maps[~case.brain].any()
    assert ((maps == 5) == (case.labels["enhancing"] & case.brain)).all()


def _first_last(rows: list[dict[str, float]], key: str, n: int = 15) -> tuple[float, float]:
    values = [r[key] for r in rows]
    return float(np.mean(values[:n])), float(np.mean(values[-n:]))


@pytest.mark.parametrize("kind,key", [("cvae", "recon"), ("cgan", "l1")])
def test_generative_losses_fall_in_a_short_run(patches, kind, key):
    model, rows = train_generator(kind, patches, steps=80, batch_size=4, lr=2e-3, seed=0)
    first, last = _first_last(rows, key)
    assert last < 0.7 * first, (kind, first, last)
    sample = model.sample(torch.zeros(2, 6, 16, 16, 16).index_fill_(1, torch.tensor([3]), 1.0))
    assert sample.shape == (2, 3, 16, 16, 16) and torch.isfinite(sample).all()


class _Copier(torch.nn.Module):
    """A 'generator' that returns training patches: the nearest-neighbour check must flag it."""

    def __init__(self, images: np.ndarray) -> None:
        super().__init__()
        self.images = torch.from_numpy(images)

    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.images[: y.shape[0]] * (1 - y[:, :1])


def test_the_discriminator_check_tells_apart_what_differs(patches):
    from gdfree.data.generative.quality import _discriminator_accuracy

    real = patches.images[:32]
    brain = (patches.label_maps[32:] > 0)[:, None]
    blurred = np.stack([np.stack([ndimage.gaussian_filter(ch, 1.5) for ch in p]) for p in patches.images[32:]]) * brain
    assert _discriminator_accuracy(real, blurred.astype(np.float32), seed=0) >= 0.8
    assert _discriminator_accuracy(real[:16], patches.images[32:48], seed=0) <= 0.75  # real vs real


def test_quality_report_flags_a_copying_generator(patches):
    train = LabelledPatches(patches.images[:32], patches.label_maps[:32])
    heldout = LabelledPatches(patches.images[32:], patches.label_maps[32:])
    # asked for the label maps of training patches, the copier hands back those very patches
    copier = quality_report(_Copier(train.images), train, LabelledPatches(heldout.images, train.label_maps[:16]), 0)
    assert copier["nearest_rmse"]["to_train_median"] == 0 and copier["nearest_rmse"]["train_over_heldout"] == 0
    model, _ = train_generator("cvae", train, steps=20, seed=0)
    report = quality_report(model, train, heldout, seed=0)
    assert report == json.loads(json.dumps(report))
    assert report["nearest_rmse"]["train_over_heldout"] > 0.8
    assert 0 <= report["discriminator_accuracy"] <= 1 and report["mean_gap_sd"] >= 0
    assert {"CSF", "GM", "WM"} <= set(report["class_stats"]["real"])


def test_synthetic_patches_carry_the_labels_of_their_label_map(cases, patches):
    maps = [case_label_map(c.image, c.brain, c.labels, 0) for c in cases]
    model, _ = train_generator("cgan", patches, steps=2, seed=0)
    synth = Synthesiser(GenerativeConfig(kind="cgan", fraction=1.0, new_lesions=3, active_probability=0.5), model, maps)
    sampler = PatchSampler(cases, ("enhancing", "lesion"), 16, SamplingRatios())
    for seed in range(4):
        rng = np.random.default_rng(seed)
        params = sampler.sample_params(rng)
        image, target, has = sampler.crop(params)
        fake, new = synth.maybe_replace(sampler, params, image, target, has, rng)
        assert fake.shape == image.shape and not np.array_equal(fake, image)
        assert not (new[0] > new[1]).any()  # enhancing inside lesion
        assert (fake[:, ~sampler.crop_brain(params)] == 0).all()
    label_map = np.full((16, 16, 16), 3, np.uint8)
    drawn = add_lesions(label_map, (4.0, 4.0, 4.0), np.random.default_rng(1), count=3, active_probability=1.0)
    assert set(np.unique(drawn)) <= {3, 5}


def test_training_with_generator_lesion_simulation_and_augmentation(tiny_cohort: Path, tmp_path: Path):
    from gdfree.data.lesion_sim import LesionSimConfig
    from gdfree.train import DatasetSpec, SplitConfig, TrainConfig, train

    cfg = TrainConfig(
        datasets=(DatasetSpec(str(tiny_cohort)),), channels=(4, 8), strides=(2, 2), num_res_units=1,
        full_res_channels=4, patch_size=16, batch_size=2, max_steps=3, val_every=3, warmup_steps=1,
        split=SplitConfig(val_fraction=0.5, test_fraction=0.34, seed=0),
        lesion_sim=LesionSimConfig(probability=1.0),
        generative=GenerativeConfig(kind="cvae", steps=5, batch_size=2, patch_size=16, fraction=0.5),
    )  # fmt: skip
    train(cfg, tmp_path / "run")
    quality = json.loads((tmp_path / "run" / "generator_quality.json").read_text())
    assert quality["patches"]["heldout"] == 32
    assert (tmp_path / "run" / "generator_log.tsv").read_text().count("\n") == 6
    with pytest.raises(ValueError, match=r"generative\.kind"):
        GenerativeConfig(kind="diffusion")


def test_lesion_simulation_state_is_prepared_once_for_every_case(cases):
    maps = [case_label_map(c.image, c.brain, c.labels, 0) for c in cases]
    sampler = PatchSampler(cases, ("enhancing", "lesion"), 16, SamplingRatios())
    sampler.prepare_lesion_simulation(0)
    assert sorted(sampler._white_matter) == sorted(sampler._lesion_models) == list(range(len(cases)))
    assert all(np.array_equal(sampler._white_matter[i], m == 3) for i, m in enumerate(maps))
    given = PatchSampler(cases, ("enhancing", "lesion"), 16, SamplingRatios())
    given.prepare_lesion_simulation(0, [np.full_like(m, 3) for m in maps])  # the generator's maps are used
    assert all(given._white_matter[i].all() for i in range(len(cases)))
