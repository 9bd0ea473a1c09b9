"""Patch sampling: categories, replay, borders, partial labels."""

from __future__ import annotations

import numpy as np
import pytest

from gdfree.data import ArrayCase, PatchSampler, SamplingRatios, normalise


def _case(with_enhancing: bool = True) -> ArrayCase:
    shape = (20, 20, 20)
    brain = np.zeros(shape, bool)
    brain[2:18, 2:18, 2:18] = True
    lesion = np.zeros(shape, bool)
    lesion[4:7, 4:7, 4:7] = True  # active lesion
    lesion[14:16, 14:16, 14:16] = True  # chronic lesion
    enhancing = np.zeros(shape, bool)
    enhancing[5, 5, 5] = True
    image = normalise(np.random.default_rng(0).random((2, *shape)).astype(np.float32), brain)
    labels = {"enhancing": enhancing if with_enhancing else None, "lesion": lesion}
    return ArrayCase("sub-1", "1", None, image, labels, brain, np.eye(4))


def test_categories_follow_the_ratios_and_replay():
    sampler = PatchSampler([_case()], ("enhancing", "lesion"), 8, SamplingRatios(0.5, 0.25, 0.25))
    rng = np.random.default_rng(0)
    params = [sampler.sample_params(rng) for _ in range(400)]
    share = {c: sum(p.category == c for p in params) / 400 for c in ("active", "chronic", "background")}
    assert abs(share["active"] - 0.5) < 0.08 and abs(share["chronic"] - 0.25) < 0.08
    again = [sampler.sample_params(np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == params[0]
    a, b = sampler.crop(params[0]), sampler.crop(params[0])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    active = next(p for p in params if p.category == "active")
    _, target, present = sampler.crop(active)
    assert present.tolist() == [True, True] and target[0].sum() == 1  # the enhancing voxel is in the patch


def test_crops_at_the_border_are_padded():
    sampler = PatchSampler([_case()], ("enhancing", "lesion"), 8, SamplingRatios())
    from gdfree.data.sampling import PatchParams

    image, target, _ = sampler.crop(PatchParams(0, "background", (-4, -4, 16)))
    assert image.shape == (2, 8, 8, 8) and target.shape == (2, 8, 8, 8)
    assert np.all(image[:, :4] == 0) and np.all(image[:, :, :, 4:] == 0)


def test_a_case_without_enhancing_label_is_not_drawn_for_active_and_says_so():
    labelled, unlabelled = _case(True), _case(False)
    sampler = PatchSampler([labelled, unlabelled], ("enhancing", "lesion"), 8, SamplingRatios(1.0, 0.0, 0.0))
    rng = np.random.default_rng(1)
    assert {sampler.sample_params(rng).case for _ in range(50)} == {0}
    _, _, present = sampler.crop(sampler.sample_params(rng).__class__(1, "background", (0, 0, 0)))
    assert present.tolist() == [False, True]
    only_lesion = PatchSampler([unlabelled], ("enhancing", "lesion"), 8, SamplingRatios(1.0, 0.0, 0.0))
    assert only_lesion.shares.tolist() == [0.0, 0.0, 1.0]  # no active voxel anywhere: background instead


def test_normalise_zscores_inside_the_brain_only():
    brain = np.zeros((4, 4, 4), bool)
    brain[1:3, 1:3, 1:3] = True
    image = np.full((1, 4, 4, 4), 100.0, np.float32)
    image[0][brain] = np.arange(8)
    out = normalise(image, brain)
    assert abs(out[0][brain].mean()) < 1e-6 and abs(out[0][brain].std() - 1) < 1e-6
    assert np.all(out[0][~brain] == 0)


def _stream(workers: int, seed: int = 0, start_step: int = 0, n: int = 4) -> list[tuple[np.ndarray, ...]]:
    from gdfree.data.loader import batch_stream

    sampler = PatchSampler([_case()], ("enhancing", "lesion"), 8, SamplingRatios())
    stream = batch_stream(sampler, strength=0.0, batch_size=3, rng=np.random.default_rng(seed), workers=workers,
                          seed=seed, start_step=start_step)  # fmt: skip
    out = [tuple(t.numpy() for t in next(stream)) for _ in range(n)]
    stream.close()
    return out


def test_batches_in_process_replay_the_rng_and_workers_replay_their_seed():
    from gdfree.data.loader import make_batch

    sampler = PatchSampler([_case()], ("enhancing", "lesion"), 8, SamplingRatios())
    inline = _stream(0)
    direct = make_batch(sampler, None, 0.0, 3, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(inline[0], direct, strict=True))
    assert inline[0][0].shape == (3, 2, 8, 8, 8) and inline[0][1].shape == (3, 2, 8, 8, 8)
    assert inline[0][2].shape == (3, 2) and inline[0][2].dtype == bool
    two = _stream(2)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(two, _stream(2), strict=True))  # same seed, same batches
    assert not np.array_equal(two[0][0], two[1][0])  # the two workers draw different batches
    assert not np.array_equal(two[0][0], _stream(2, start_step=100)[0][0])  # a resume draws new ones


def _two_chronic_lesions() -> ArrayCase:
    shape = (24, 24, 24)
    brain = np.ones(shape, bool)
    lesion = np.zeros(shape, bool)
    lesion[3:9, 3:9, 3:9] = True  # 216 voxels
    lesion[18, 18, 18:20] = True  # 2 voxels
    image = normalise(np.random.default_rng(0).random((1, *shape)).astype(np.float32), brain)
    labels = {"enhancing": np.zeros(shape, bool), "lesion": lesion}
    return ArrayCase("sub-1", "1", None, image, labels, brain, np.eye(4))


def _small_lesion_share(unit: str) -> float:
    ratios = SamplingRatios(0.0, 1.0, 0.0, unit=unit)
    sampler = PatchSampler([_two_chronic_lesions()], ("enhancing", "lesion"), 8, ratios)
    rng = np.random.default_rng(0)
    centres = [np.array(sampler.sample_params(rng).corner) + 4 for _ in range(600)]
    return float(np.mean([c[0] > 12 for c in centres]))  # the jitter (<= 2) keeps the two lesions apart


def test_sampling_by_lesion_draws_every_lesion_equally_often_whatever_its_size():
    assert _small_lesion_share("voxel") < 0.03  # 2 of 218 voxels
    assert abs(_small_lesion_share("lesion") - 0.5) < 0.07
    with pytest.raises(ValueError, match=r"sampling\.unit"):
        SamplingRatios(unit="patient")


def test_sampling_by_lesion_keeps_each_case_voxels_and_replays():
    sampler = PatchSampler([_case(), _two_chronic_lesions()], ("enhancing", "lesion"), 8, SamplingRatios(unit="lesion"))
    assert sampler.lesions["active"].tolist() == [[0, 0, 1]]
    # case 0: the 8 corners of the active cube left beyond 2 voxels of its enhancing voxel, and the 2^3 lesion
    assert sampler.lesions["chronic"][-3:].tolist() == [[0, 8, 16], [1, 0, 216], [1, 216, 218]]
    assert sorted(sampler.index[1]["chronic"]) == sorted(np.flatnonzero(_two_chronic_lesions().labels["lesion"]))
    params = [sampler.sample_params(np.random.default_rng(3)) for _ in range(2)]
    assert params[0] == params[1]
