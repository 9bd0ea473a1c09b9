from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats

from gdfree.config import config_from_dict, load_config
from gdfree.io.images import read_volume
from gdfree.phantom.cohort import PhantomConfig, render_subject, sample_subject, write_cohort
from gdfree.phantom.lesions import render_lesion


def _digests(root: Path, subject: str) -> dict[str, str]:
    files = [*root.glob(f"sub-{subject}/anat/*"), *root.glob(f"derivatives/phantom/sub-{subject}/anat/*")]
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_same_bytes_and_subject_independent_of_cohort_size(tiny_cohort: Path, tmp_path: Path):
    write_cohort(tmp_path / "one", PhantomConfig(resolution_mm=4), 1, seed=7)
    again = _digests(tmp_path / "one", "001")
    assert len(again) == 9  # 5 images, 3 masks, 1 parameter sidecar
    assert again == _digests(tiny_cohort, "001")
    write_cohort(tmp_path / "other", PhantomConfig(resolution_mm=4), 1, seed=8)
    assert _digests(tmp_path / "other", "001") != again
    # a held-out batch: subjects after the first ones, the same bytes as in the bigger cohort
    write_cohort(tmp_path / "later", PhantomConfig(resolution_mm=4), 1, seed=7, first=2)
    assert sorted(p.name for p in (tmp_path / "later").glob("sub-*")) == ["sub-003"]
    assert _digests(tmp_path / "later", "003") == _digests(tiny_cohort, "003")
    assert "sub-003 onwards" in (tmp_path / "later" / "README").read_text()


def test_sidecar_counts_match_participants(tiny_cohort: Path):
    rows = (tiny_cohort / "participants.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    for row in rows[1:]:
        rec = dict(zip(header, row.split("\t"), strict=True))
        label = rec["participant_id"]
        side = json.loads((tiny_cohort / "derivatives/phantom" / label / "anat" / f"{label}_phantom.json").read_text())
        assert side["n_lesions"] == len(side["lesions"]) == int(rec["n_lesions"])
        assert side["n_active"] == sum(les["active"] for les in side["lesions"]) == int(rec["n_active"])
    cfg = load_config(PhantomConfig, tiny_cohort / "derivatives/phantom/phantom_config.yaml")
    assert cfg == PhantomConfig(resolution_mm=4)


@pytest.fixture(scope="module")
def subject_2mm():
    """One 2 mm subject with eight active lesions among 16-24."""
    cfg = PhantomConfig(resolution_mm=2, lesions_min=16, active_count_probs=(0,) * 8 + (1.0,))
    params, anat = sample_subject(np.random.default_rng([3, 0]), cfg, "001", [3, 0])
    images, masks, affine = render_subject(params, cfg, anat)
    return cfg, params, anat, images, masks, affine


def test_masks_agree_with_sidecar_lesions(subject_2mm):
    _cfg, params, _anat, _, masks, affine = subject_2mm
    voxel = float(abs(np.linalg.det(affine[:3, :3])))
    labels, n = ndimage.label(masks["lesion"], structure=np.ones((3, 3, 3)))
    centres = np.array([les.centre_mm for les in params.lesions])
    hit: dict[int, int] = {}
    for j, com in enumerate(ndimage.center_of_mass(masks["lesion"], labels, range(1, n + 1)), start=1):
        world = affine[:3, :3] @ np.asarray(com) + affine[:3, 3]
        nearest = int(np.argmin(np.linalg.norm(centres - world, axis=1)))
        assert np.linalg.norm(centres[nearest] - world) <= params.lesions[nearest].bounding_radius_mm + 2 * 1.8
        hit[nearest] = hit.get(nearest, 0) + int((labels == j).sum())
    expected = {i for i, les in enumerate(params.lesions) if les.mask_voxels > 0}
    assert set(hit) == expected  # every visible lesion found, nothing else in the mask
    assert sum(les.mask_voxels for les in params.lesions) == int(masks["lesion"].sum())
    for i, les in enumerate(params.lesions):
        if les.volume_mm3 >= 10 * voxel:  # partial volume: about one shell of border voxels
            assert abs(hit[i] * voxel - les.volume_mm3) <= 0.35 * les.volume_mm3, les
    total_true = sum(les.volume_mm3 for les in params.lesions)
    assert abs(masks["lesion"].sum() * voxel - total_true) <= 0.1 * total_true
    assert not (masks["enhancing"] & ~masks["lesion"]).any()
    assert len(params.lesions) >= 16 and sum(les.active for les in params.lesions) == 8


def _wm_median(img: np.ndarray, anat, masks) -> float:
    return float(np.median(img[(anat.maps.wm > 0.9) & ~ndimage.binary_dilation(masks["lesion"], iterations=2)]))


def test_active_lesions_enhance_on_post_gd_only(subject_2mm):
    cfg, params, anat, images, masks, affine = subject_2mm
    t1 = images["T1w"] / _wm_median(images["T1w"], anat, masks)
    gd = images["T1gd"] / _wm_median(images["T1gd"], anat, masks)
    checked = {"active": 0, "chronic": 0}
    for les in params.lesions:
        r = render_lesion(les, affine, anat.maps.shape, halo_radius_mm=cfg.halo_radius_mm,
                          halo_width_mm=cfg.halo_width_mm, supersample=4)  # fmt: skip
        region = (r.enhancing >= 0.5) if les.active else (r.lesion >= 0.9)
        if region.sum() < 2:
            continue
        ratio = np.median(gd[r.slices][region]) / np.median(t1[r.slices][region])
        if les.active:
            assert ratio > 1.35, (les.pattern, ratio)
            assert np.median(t1[r.slices][region]) < 1.05  # no enhancement on pre-contrast T1w
        else:
            assert 0.85 < ratio < 1.15, ratio
        checked["active" if les.active else "chronic"] += 1
    assert checked["active"] >= 3 and checked["chronic"] >= 5


def _lesion_features(cfg: PhantomConfig, seeds: list[int], strength: float) -> dict[str, dict[str, list[float]]]:
    """Per-lesion pre-contrast features of active vs chronic lesions, images normalised by WM."""
    cfg = dataclasses.replace(cfg, signature_strength=strength)
    out: dict[str, dict[str, list[float]]] = {"active": {}, "chronic": {}}
    for seed in seeds:
        params, anat = sample_subject(np.random.default_rng([seed, 0]), cfg, "x", [seed, 0])
        images, masks, affine = render_subject(params, cfg, anat)
        norm = {m: images[m] / _wm_median(images[m], anat, masks) for m in cfg.modalities}
        for les in params.lesions:
            r = render_lesion(les, affine, anat.maps.shape, halo_radius_mm=cfg.halo_radius_mm,
                              halo_width_mm=cfg.halo_width_mm, supersample=2)  # fmt: skip
            core = r.lesion >= 0.75
            halo = (r.halo >= 0.5) & ~masks["lesion"][r.slices]
            if core.sum() < 2 or halo.sum() < 2:
                continue
            feats = {f"{m} core": float(norm[m][r.slices][core].mean()) for m in cfg.modalities}
            feats["T2w core CV"] = float(norm["T2w"][r.slices][core].std() / norm["T2w"][r.slices][core].mean())
            feats.update({f"{m} halo": float(norm[m][r.slices][halo].mean()) for m in ("FLAIR", "PD", "T2w")})
            group = out["active" if les.active else "chronic"]
            for k, v in feats.items():
                group.setdefault(k, []).append(v)
    return out


@pytest.mark.slow
def test_strength_zero_active_and_chronic_lesions_look_alike_before_gd():
    """Two-sample KS tests on per-lesion features: no difference at strength 0, clear ones at strength 1."""
    cfg = PhantomConfig(resolution_mm=2, lesions_min=14, lesions_max=20, active_count_probs=(0,) * 6 + (1.0,),
                        signature_modalities=("FLAIR", "T1w", "T2w"))  # fmt: skip
    seeds = [11, 12, 13]
    null = _lesion_features(cfg, seeds, 0.0)
    assert len(null["active"]["FLAIR core"]) >= 12 and len(null["chronic"]["FLAIR core"]) >= 20
    p_null = {k: stats.ks_2samp(null["active"][k], null["chronic"][k]).pvalue for k in null["active"]}
    assert min(p_null.values()) > 0.01, p_null
    planted = _lesion_features(cfg, seeds, 1.0)
    p_planted = {k: stats.ks_2samp(planted["active"][k], planted["chronic"][k]).pvalue for k in planted["active"]}
    assert p_planted["FLAIR halo"] < 1e-3 and p_planted["T1w core"] < 1e-3, p_planted
    assert p_planted["PD halo"] > 0.01  # PD is not a carrier here


def test_config_validation_names_the_problem(tmp_path: Path):
    with pytest.raises(ValueError, match="active_count_probs allows 8 active lesions but lesions_min is 4"):
        PhantomConfig(lesions_min=4)
    with pytest.raises(ValueError, match="signature_modalities"):
        PhantomConfig(signature_modalities=("T1gd",))
    with pytest.raises(ValueError, match="resolution_mm: expected 1, 2 or 4"):
        PhantomConfig(resolution_mm=3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("resolution_mm: 2\nsignature_strenght: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key\(s\) signature_strenght"):
        load_config(PhantomConfig, bad)
    with pytest.raises(ValueError, match=r"config\.halo_gain: expected a number"):
        config_from_dict(PhantomConfig, {"halo_gain": "high"})


def test_images_are_int16_skull_stripped_and_on_one_grid(tiny_cohort: Path):
    t1 = read_volume(tiny_cohort / "sub-002/anat/sub-002_T1w.nii.gz")
    brain = read_volume(tiny_cohort / "derivatives/phantom/sub-002/anat/sub-002_desc-brain_mask.nii.gz")
    assert t1.data.dtype == np.int16 and t1.same_grid(brain) and t1.spacing_mm == (4.0, 4.0, 4.0)
    assert (t1.data[brain.data == 0] > 0).mean() < 0.05
    assert np.median(t1.data[brain.data > 0]) > 300


def test_refuses_to_write_into_a_users_folder(tmp_path: Path):
    (tmp_path / "precious.txt").write_text("data")
    with pytest.raises(FileExistsError, match="not a gdfree synthetic dataset"):
        write_cohort(tmp_path, PhantomConfig(resolution_mm=4), 1, seed=0)
    assert (tmp_path / "precious.txt").read_text() == "data"


def test_probability_tables_are_checked():
    with pytest.raises(ValueError, match="location_probs"):
        PhantomConfig(location_probs={"cortex": 1.0})
    with pytest.raises(ValueError, match="pattern_probs"):
        PhantomConfig(pattern_probs={"nodular": -1.0})


def _tissue_medians(images, anat, masks, params) -> dict[str, dict[str, float]]:
    """Median of pure-tissue voxels and of chronic, non-black-hole lesion cores, relative to WM, per role."""
    m = anat.maps
    lesion_near = ndimage.binary_dilation(masks["lesion"], iterations=2)
    pure = {"WM": m.wm > 0.95, "GM": m.gm > 0.95, "CSF": m.csf > 0.95}
    pure = {k: v & ~lesion_near & ndimage.binary_erosion(m.brain > 0.5, iterations=2) for k, v in pure.items()}
    core = np.zeros(m.shape, bool)
    for les in params.lesions:
        if not (les.active or les.black_hole):
            r = render_lesion(les, anat.maps.affine, m.shape, halo_radius_mm=2.5, halo_width_mm=1.2, supersample=2)
            core[r.slices] |= r.lesion >= 0.99
    out = {}
    for role, img in images.items():
        wm = float(np.median(img[pure["WM"]]))
        out[role] = {k: float(np.median(img[v])) / wm for k, v in pure.items() if k != "WM"}
        out[role]["lesion"] = float(np.median(img[core])) / wm
    return out


@pytest.mark.slow
def test_domain_randomised_subjects_keep_the_tissue_ordering_they_promise():
    from gdfree.phantom.randomise import DomainRandomisation, check_ordering

    # ordering is a local property: measured over the whole brain, bias field and blur would mix it up, so they
    # are off here (noise and texture stay); that they are drawn and applied is checked below
    dr = DomainRandomisation(enabled=True, bias_strength=(0, 0), in_plane_mm=(0, 0), slice_mm=(0, 0))
    cfg = PhantomConfig(resolution_mm=2, lesions_min=16, domain_randomisation=dr)
    default = PhantomConfig(resolution_mm=2, lesions_min=16)
    seen = []
    for seed in range(3):
        params, anat = sample_subject(np.random.default_rng([seed, 0]), cfg, "001", [seed, 0])
        plain, _ = sample_subject(np.random.default_rng([seed, 0]), default, "001", [seed, 0])
        assert params.deform == plain.deform and [les.centre_mm for les in params.lesions] == [
            les.centre_mm for les in plain.lesions]  # fmt: skip  # same anatomy and lesions, other appearance
        images, masks, _ = render_subject(params, cfg, anat)
        measured = _tissue_medians(images, anat, masks, params)
        for role in ("T1w", "T2w", "FLAIR", "PD"):
            assert not check_ordering(role, params.domain["contrasts"][role], dr.margin)
            assert not check_ordering(role, measured[role]), (seed, role, measured[role], params.domain)
        seen.append(params.domain["contrasts"]["FLAIR"]["lesion"])
    assert len(set(seen)) == 3  # each subject its own draw
    full = dataclasses.replace(cfg, domain_randomisation=DomainRandomisation(enabled=True))
    again, anat = sample_subject(np.random.default_rng([0, 0]), full, "001", [0, 0])
    assert again.domain == sample_subject(np.random.default_rng([0, 0]), full, "001", [0, 0])[0].domain
    assert max(max(f) for f in again.domain["fwhm_mm"].values()) > 2.0 and again.domain["bias_strength"] > 0
    blurred = render_subject(again, full, anat)[0]["FLAIR"]
    sharp = render_subject(dataclasses.replace(again, domain={**again.domain, "fwhm_mm": {
        r: [0.0] * 3 for r in again.domain["fwhm_mm"]}}), full, anat)[0]["FLAIR"]  # fmt: skip
    inside = anat.maps.brain > 0.99
    assert np.abs(np.diff(blurred, axis=0))[inside[1:]].mean() < np.abs(np.diff(sharp, axis=0))[inside[1:]].mean()


def test_domain_randomisation_ranges_that_cannot_keep_the_ordering_are_refused():
    from gdfree.phantom.randomise import DomainRandomisation, sample_domain

    flair = {"GM": (1.5, 1.6), "CSF": (0.2, 0.3), "lesion": (1.1, 1.2)}
    bad = DomainRandomisation(enabled=True, ranges={"FLAIR": flair})
    with pytest.raises(ValueError, match=r"FLAIR.*never kept the ordering"):
        sample_domain(np.random.default_rng(0), bad, ("FLAIR",))
    with pytest.raises(ValueError, match=r"domain_randomisation\.noise"):
        DomainRandomisation(noise=(0.1, 0.01))
    with pytest.raises(ValueError, match="missing an entry for T2w"):
        PhantomConfig(domain_randomisation=DomainRandomisation(enabled=True, ranges={"T1w": {"GM": (0.5, 0.9)}}))


def test_a_confluent_band_is_labelled_lesion_along_the_ventricles_and_bright_on_flair():
    from gdfree.phantom.randomise import DomainRandomisation

    plain = PhantomConfig(resolution_mm=2, domain_randomisation=DomainRandomisation(enabled=True))
    band = dataclasses.replace(plain, domain_randomisation=DomainRandomisation(enabled=True, confluent_probability=1.0))
    params, anat = sample_subject(np.random.default_rng([1, 0]), band, "001", [1, 0])
    without, _ = sample_subject(np.random.default_rng([1, 0]), plain, "001", [1, 0])
    assert params.domain["confluent"] is not None and without.domain["confluent"] is None
    images, masks, _ = render_subject(params, band, anat)
    base_masks = render_subject(without, plain, anat)[1]
    new = masks["lesion"] & ~base_masks["lesion"]
    assert new.sum() * 8 > 3000 and not (masks["enhancing"] ^ base_masks["enhancing"]).any()  # chronic only
    vent = anat.maps.csf > 0.5
    assert ndimage.binary_dilation(vent, iterations=6)[new].mean() > 0.95  # along the ventricles
    wm = (anat.maps.wm > 0.95) & ~ndimage.binary_dilation(masks["lesion"], iterations=2)
    assert np.median(images["FLAIR"][new]) > 1.1 * np.median(images["FLAIR"][wm])


def test_real_lesion_contrasts_change_only_each_lesions_contrast():
    """The same seed places the same lesions; each one takes one measured real lesion's contrasts (post-Gd T1w as
    T1w), and its rendered FLAIR follows the drawn ratio."""
    from gdfree.phantom.config import real_lesion_contrasts

    base = PhantomConfig(resolution_mm=2, lesions_min=16, active_count_probs=(0,) * 8 + (1.0,))
    real = dataclasses.replace(base, lesion_contrasts="real-lesions")
    calibrated, _ = sample_subject(np.random.default_rng([3, 0]), base, "001", [3, 0])
    params, anat = sample_subject(np.random.default_rng([3, 0]), real, "001", [3, 0])
    assert [les.centre_mm for les in params.lesions] == [les.centre_mm for les in calibrated.lesions]
    assert [les.active for les in params.lesions] == [les.active for les in calibrated.lesions]
    assert all(les.contrast is None for les in calibrated.lesions)
    roles, table = real_lesion_contrasts()
    rows = {tuple(np.round(r, 4)) for r in table}
    for les in params.lesions:
        assert les.contrast is not None and tuple(les.contrast[r] for r in roles) in rows
        assert les.contrast["T1gd"] == les.contrast["T1w"] and "PD" not in les.contrast
    images, masks, affine = render_subject(params, real, anat)
    flair = images["FLAIR"] / _wm_median(images["FLAIR"], anat, masks)
    drawn, seen = [], []
    for les in params.lesions:
        r = render_lesion(les, affine, anat.maps.shape, halo_radius_mm=real.halo_radius_mm,
                          halo_width_mm=real.halo_width_mm, supersample=4)  # fmt: skip
        core = r.lesion >= 0.9
        if not les.active and core.sum() >= 4:
            drawn.append(les.contrast["FLAIR"])  # type: ignore[index]
            seen.append(float(np.median(flair[r.slices][core])))
    assert len(drawn) >= 4
    assert stats.spearmanr(drawn, seen).statistic > 0.6, (drawn, seen)
    assert 0.85 < float(np.median(np.divide(seen, drawn))) < 1.15, (drawn, seen)
    with pytest.raises(ValueError, match="lesion_contrasts: expected one of calibrated, real-lesions"):
        PhantomConfig(lesion_contrasts="measured")


def test_a_confluent_band_takes_a_real_lesions_contrast_when_asked():
    """With ``confluent_contrast: real-lesions`` a confluent band draws a measured real lesion's contrasts after the
    lesions (whose contrasts stay those of the default, randomised band), and its rendered FLAIR follows that ratio
    instead of the randomised lesion level."""
    from gdfree.phantom.config import real_lesion_contrasts
    from gdfree.phantom.randomise import DomainRandomisation

    randomised = DomainRandomisation(enabled=True, confluent_probability=1.0)
    band = dataclasses.replace(randomised, confluent_contrast="real-lesions")
    cfg = PhantomConfig(resolution_mm=2, domain_randomisation=band, lesion_contrasts="real-lesions")
    params, anat = sample_subject(np.random.default_rng([1, 0]), cfg, "001", [1, 0])
    default, _ = sample_subject(np.random.default_rng([1, 0]),
                                dataclasses.replace(cfg, domain_randomisation=randomised), "001", [1, 0])  # fmt: skip
    assert "contrast" not in default.domain["confluent"]
    assert [les.contrast for les in params.lesions] == [les.contrast for les in default.lesions]
    drawn = params.domain["confluent"]["contrast"]
    roles, table = real_lesion_contrasts()
    assert tuple(drawn[r] for r in roles) in {tuple(np.round(r, 4)) for r in table}
    assert drawn["T1gd"] == drawn["T1w"]
    no_band = dataclasses.replace(cfg, domain_randomisation=DomainRandomisation(enabled=True))
    plain, _ = sample_subject(np.random.default_rng([1, 0]), no_band, "001", [1, 0])
    images, masks, _ = render_subject(params, cfg, anat)
    core = ndimage.binary_erosion(masks["lesion"] & ~render_subject(plain, no_band, anat)[1]["lesion"], iterations=1)
    flair = images["FLAIR"] / _wm_median(images["FLAIR"], anat, masks)
    level = params.domain["contrasts"]["FLAIR"]["lesion"]
    seen = float(np.median(flair[core]))
    assert abs(seen - drawn["FLAIR"]) < abs(seen - level) or abs(drawn["FLAIR"] - level) < 0.05
    assert 0.85 < seen / drawn["FLAIR"] < 1.15, (seen, drawn["FLAIR"], level)
    with pytest.raises(ValueError, match="confluent_contrast: expected randomised or real-lesions"):
        DomainRandomisation(confluent_contrast="measured")
