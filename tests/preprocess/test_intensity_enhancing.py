"""N4, normalisation, output grid and enhancing-label derivation on hand-built volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.images import from_sitk, to_sitk
from gdfree.preprocess.enhancing import EnhancingConfig, derive_enhancing
from gdfree.preprocess.intensity import n4, normalise_intensity
from gdfree.preprocess.prepare import output_grid
from gdfree.preprocess.qc import write_qc_png
from gdfree.types import Volume


def _head(shape: tuple[int, int, int] = (40, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(shape).astype(float)
    centre = (np.asarray(shape) - 1)[:, None, None, None] / 2
    r = np.sqrt(((grid - centre) ** 2).sum(axis=0))
    brain = r < shape[0] * 0.4
    image = np.where(brain, 1000.0, 0.0) + np.where(r < shape[0] * 0.15, -300.0, 0.0) * brain
    return image.astype(np.float32), brain


def test_n4_removes_a_known_smooth_bias_field():
    image, brain = _head()
    x = np.linspace(-1, 1, image.shape[0])[:, None, None]
    field = np.broadcast_to(np.exp(0.3 * x), image.shape)  # up to 35% brighter on one side
    biased = Volume(image * field, np.diag([2.0, 2.0, 2.0, 1.0]))
    corrected, estimated = n4(to_sitk(biased, np.float32), to_sitk(Volume(brain.astype(np.uint8), biased.affine)),
                              shrink=2)  # fmt: skip
    out = from_sitk(corrected).data
    wm = brain & (image == 1000.0)
    before = np.std(biased.data[wm]) / np.mean(biased.data[wm])
    after = np.std(out[wm]) / np.mean(out[wm])
    assert after < before / 3
    est = from_sitk(estimated).data[wm]
    assert np.corrcoef(est, field[wm])[0, 1] > 0.95


def test_normalisations_give_their_documented_values():
    image, brain = _head()
    rng = np.random.default_rng(0)
    noisy = image + rng.normal(0, 10, image.shape).astype(np.float32)
    z, info = normalise_intensity(noisy, brain, "zscore")
    assert abs(z[brain].mean()) < 1e-5 and abs(z[brain].std() - 1) < 1e-4 and (z[~brain] == 0).all()
    nawm, info = normalise_intensity(noisy, brain, "nawm")
    assert abs(info["nawm_mode"] - 1000) < 10  # the white-matter peak, not the darker core
    assert abs(np.median(nawm[brain & (image == 1000)]) - 1) < 0.01
    same, info = normalise_intensity(noisy, brain, "none")
    assert np.array_equal(same, noisy) and info == {}
    with pytest.raises(ValueError, match="normalisation"):
        normalise_intensity(noisy, brain, "histogram")
    with pytest.raises(ValueError, match="empty"):
        normalise_intensity(noisy, np.zeros_like(brain), "zscore")


def test_output_grid_reorients_to_ras_without_moving_anything():
    lpi = np.diag([-1.0, -2.0, -3.0, 1.0])
    lpi[:3, 3] = (50, 60, 70)
    ref = Volume(np.zeros((10, 20, 30), np.float32), lpi)
    shape, affine = output_grid(ref)
    out = Volume(np.zeros(shape), affine)
    assert out.orientation == "RAS" and shape == (10, 20, 30)
    corners_in = {tuple(np.round(ref.affine @ [i, j, k, 1], 6)) for i in (0, 9) for j in (0, 19) for k in (0, 29)}
    corners_out = {tuple(np.round(affine @ [i, j, k, 1], 6)) for i in (0, 9) for j in (0, 19) for k in (0, 29)}
    assert corners_in == corners_out
    shape2, affine2 = output_grid(ref, 1.0)
    assert shape2 == (10, 40, 90) and np.allclose(np.abs(np.diag(affine2)[:3]), 1.0)
    centre = lambda s, a: a @ np.append((np.asarray(s) - 1) / 2, 1)  # noqa: E731
    assert np.allclose(centre(shape2, affine2), centre((10, 20, 30), lpi))


def _enhancing_case() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[4:36, 4:36, 4:36] = True
    lesion = np.zeros(shape, bool)
    lesion[10:16, 10:16, 10:16] = True  # enhancing: 216 voxels
    lesion[24:28, 24:28, 24:28] = True  # not enhancing
    pre = np.where(brain, 1000.0, 0.0) + rng.normal(0, 20, shape)
    pre[lesion] = 800 + rng.normal(0, 20, int(lesion.sum()))
    post = pre * 1.1 + rng.normal(0, 20, shape)  # another gain: the NAWM modes take it out
    truth = np.zeros(shape, bool)
    truth[10:16, 10:16, 10:16] = True
    post[truth] += 600
    vessel = np.zeros(shape, bool)
    vessel[30, 5:35, 30] = True
    post[vessel] += 800  # a vessel outside every lesion
    return pre.astype(np.float32), post.astype(np.float32), brain, lesion, truth, vessel


def test_enhancing_label_finds_the_enhancing_lesion_only(tmp_path: Path):
    pre, post, brain, lesion, truth, vessel = _enhancing_case()
    result = derive_enhancing(pre, post, brain, (1.0, 1.0, 1.0), lesion)
    info = result.info
    assert np.array_equal(result.mask, truth) and info["n_components"] == 1 and info["region"] == "lesion"
    assert info["volumes_mm3"] == [216.0] and result.components[0]["verdict"] == "kept"
    everything = EnhancingConfig(reject=False)
    in_brain = derive_enhancing(pre, post, brain, (1.0, 1.0, 1.0), None, everything)
    assert (in_brain.mask & truth).sum() == 216 and (in_brain.mask & vessel).any() and "note" in in_brain.info
    judged = derive_enhancing(pre, post, brain, (1.0, 1.0, 1.0), None)  # the line vessel is a candidate, rejected
    assert (judged.mask & truth).sum() == 216 and not (judged.mask & vessel).any()
    line = next(c for c in judged.components if c["verdict"] == "rejected")
    assert line["reason"].startswith(("elongated", "tubular")) and (judged.candidates[vessel] > 0).any()
    small = derive_enhancing(pre, post, brain, (1.0, 1.0, 1.0), lesion, EnhancingConfig(min_volume_mm3=216))
    assert not small.mask.any()  # strictly larger than the minimum volume
    png = write_qc_png(tmp_path / "qc.png", pre, post, result.diff, result.mask, title="test",
                       rejected=(judged.candidates > 0) & ~judged.mask)  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="share a grid"):
        derive_enhancing(pre, post[:-1], brain, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="region"):
        EnhancingConfig(region="skull")


@pytest.mark.slow
def test_prepare_command_on_aligned_tiny_cohort(tiny_cohort: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    args = ["prepare", str(tiny_cohort), "--out", str(out), "--no-register", "--normalise", "zscore", "--jobs", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "prepared 3, skipped 0" in result.output
    again = CliRunner().invoke(app, args)
    assert "prepared 0, skipped 3" in again.output
    bad = CliRunner().invoke(app, [*args, "--cases", "sub-999"])
    assert bad.exit_code == 2 and "sub-999" in bad.output
