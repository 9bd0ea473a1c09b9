"""Learned brain extraction (deepbet): pinned network files, the atlas fallback, and a real skull-stripped scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from gdfree.io.images import read_volume
from gdfree.metrics.voxel import dice
from gdfree.preprocess import brain as brain_module
from gdfree.preprocess.brain import BrainExtractionUnavailable, learned_brain_mask

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "open_ms_data"


@pytest.fixture
def tampered(monkeypatch: pytest.MonkeyPatch):
    brain_module._extractor.cache_clear()
    monkeypatch.setitem(brain_module.DEEPBET_SHA256, "model.pt", "0" * 64)
    yield
    brain_module._extractor.cache_clear()


def test_a_network_file_other_than_the_pinned_one_is_refused(tampered):
    from gdfree.types import Volume

    with pytest.raises(BrainExtractionUnavailable, match="SHA-256"):
        learned_brain_mask(Volume(np.ones((8, 8, 8), np.float32) * np.arange(8), np.eye(4)))


def test_prepare_falls_back_to_the_atlas_when_deepbet_is_refused(tampered, tiny_cohort: Path, tmp_path: Path):
    from gdfree.io.adapters import discover
    from gdfree.preprocess.prepare import PrepareConfig, prepare_case

    case = discover(tiny_cohort)[0]
    case.masks.pop("brain")
    record = prepare_case(case, tmp_path / "out", PrepareConfig(register=False, n4=False, derive_enhancing=False))
    brain = record.brain_mask
    assert brain["brain_mask_source"] == "atlas" and "SHA-256" in brain["brain_mask_learned_error"]
    # asked for by name, a refused deepbet fails the case (the policy itself is accepted: issue 29)
    with pytest.raises(ValueError, match=r"brain_mask 'learned' failed: .*SHA-256"):
        prepare_case(case, tmp_path / "out2", PrepareConfig(register=False, n4=False, brain_mask="learned"))


def test_brain_mask_policy_is_checked_once_and_every_offered_value_is_accepted():
    from gdfree.preprocess.brain import BRAIN_MASKS, BrainMaskPolicy
    from gdfree.preprocess.prepare import PrepareConfig

    assert BRAIN_MASKS == ("auto", "provided", "learned", "atlas")
    for name in BRAIN_MASKS:
        assert PrepareConfig(brain_mask=name).brain_mask is BrainMaskPolicy(name)
    with pytest.raises(ValueError, match="brain_mask: expected one of auto, provided, learned, atlas, got 'skull'"):
        PrepareConfig(brain_mask="skull")


def test_prepare_brain_mask_learned_runs_deepbet_even_beside_a_provided_mask(tiny_cohort: Path, tmp_path: Path):
    """Issue 29: ``--brain-mask learned`` was always refused by the config; now deepbet's mask is the one written."""
    from gdfree.io.adapters import discover
    from gdfree.preprocess.prepare import PrepareConfig, prepare_case

    case = discover(tiny_cohort)[0]
    truth = read_volume(case.masks["brain"]).data > 0  # provided, and still not used: learned was asked for
    out = tmp_path / "out"
    record = prepare_case(case, out, PrepareConfig(register=False, n4=False, derive_enhancing=False,
                                                   brain_mask="learned"))  # fmt: skip
    assert record.brain_mask["brain_mask_source"] == "learned (deepbet)"
    written = read_volume(next(out.rglob("*_desc-brain_mask.nii.gz"))).data > 0
    assert not np.array_equal(written, truth) and dice(written, truth) > 0.9  # measured 0.96 on the 4 mm phantom


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/open_ms_data")
def test_learned_mask_matches_the_upstream_skull_stripping_of_a_real_scan():
    image = read_volume(next((SHARED / "cross_sectional" / "MNI" / "patient07").glob("T1_*.nii.gz")))
    reference = ndimage.binary_fill_holes(image.data > 1e-3)
    assert dice(learned_brain_mask(image), reference) > 0.95  # measured 0.973
