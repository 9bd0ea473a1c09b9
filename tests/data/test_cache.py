"""Issue 20: the memory-mapped training cache gives the arrays (and the training) of a fresh read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gdfree.data import cache as cache_module
from gdfree.data.cache import cached_case
from gdfree.data.cases import load_array_case
from gdfree.io.adapters import discover
from gdfree.io.images import read_volume, write_volume

HEADS = ("enhancing", "lesion")
MODALITIES = ("T1w", "T2w", "FLAIR")


def test_a_cached_case_equals_a_fresh_read_and_is_read_only(tiny_cohort: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    files = discover(tiny_cohort)[0]
    fresh = load_array_case(files, MODALITIES, HEADS)
    first = cached_case(files, MODALITIES, HEADS, cache=tmp_path / "cache")
    calls = []
    monkeypatch.setattr(cache_module, "load_array_case", lambda *a, **k: calls.append(a))
    again = cached_case(files, MODALITIES, HEADS, cache=tmp_path / "cache", dataset=2)
    assert calls == [] and again.dataset == 2  # served from the cache
    for case in (first, again):
        assert isinstance(case.image, np.memmap) and not case.image.flags.writeable
        np.testing.assert_array_equal(case.image, fresh.image)
        np.testing.assert_array_equal(case.brain, fresh.brain)
        for h in HEADS:
            np.testing.assert_array_equal(case.labels[h], fresh.labels[h])
        np.testing.assert_array_equal(case.affine, fresh.affine)
        assert case.fingerprints == fresh.fingerprints and case.raw_stats == fresh.raw_stats
        assert case.raw_zero == fresh.raw_zero and case.case_id == fresh.case_id
    with pytest.raises(ValueError):
        first.image[0, 0, 0, 0] = 1.0
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary folder left


def test_an_edited_input_gets_a_new_entry(tiny_cohort: Path, tmp_path: Path):
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    files = discover(cohort)[0]
    before = cached_case(files, MODALITIES, HEADS, cache=tmp_path / "cache")
    flair = read_volume(files.images["FLAIR"])
    write_volume(flair.with_data(np.asarray(flair.data) * 2 + 1), files.images["FLAIR"])
    after = cached_case(files, MODALITIES, HEADS, cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2
    assert before.fingerprints != after.fingerprints


def test_training_from_the_cache_equals_training_from_the_files(tiny_cohort: Path, tmp_path: Path):
    from tests.conftest import tiny_train_config

    from gdfree.train import train

    train(tiny_train_config(tiny_cohort, max_steps=2, val_every=2), tmp_path / "plain")
    train(tiny_train_config(tiny_cohort, max_steps=2, val_every=2, cache=str(tmp_path / "cache")), tmp_path / "cached")
    plain, cached = (json.loads((tmp_path / r / "model.json").read_text()) for r in ("plain", "cached"))
    assert plain["weights_sha256"] == cached["weights_sha256"]
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the training and the validation case
