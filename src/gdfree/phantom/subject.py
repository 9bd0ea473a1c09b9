"""One synthetic subject: :func:`sample_subject` draws every parameter (JSON-friendly, written beside the truth so
the subject can be replayed) and :func:`render_subject` turns them deterministically into images and masks, with
bias field, noise, vessels that enhance, and lesion confounders."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.phantom.anatomy import DeformParams, SubjectAnatomy, deform, sample_deform, template_maps
from gdfree.phantom.config import WM_LEVEL, PhantomConfig, real_lesion_contrasts
from gdfree.phantom.lesions import LesionParams, render_lesion, sample_lesions
from gdfree.phantom.randomise import apply_blur, confluent_fraction, sample_domain
from gdfree.types import POST_CONTRAST

__all__ = ["CONFOUNDER_KINDS", "SubjectParams", "lesion_confounders", "render_subject", "sample_subject",
           "subject_label"]  # fmt: skip


@dataclass
class SubjectParams:
    """Every sampled parameter of one subject; :func:`render_subject` is a deterministic function of it."""

    subject: str
    seed: list[int]
    deform: DeformParams
    gain: dict[str, float]
    bias: dict[str, list[float]]
    noise_seed: int
    texture_seed: int
    vessel_seed: int
    n_active_drawn: int
    lesions: list[LesionParams]
    domain: dict[str, Any] | None = None  # domain-randomised appearance (:func:`sample_domain`), else None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_lesions"] = len(self.lesions)
        d["n_active"] = sum(lesion.active for lesion in self.lesions)
        return d


def subject_label(index: int, n_subjects: int) -> str:
    """Zero-padded subject label (``001``), at least 3 digits."""
    return str(index + 1).zfill(max(3, len(str(n_subjects))))


def _centre(anat_maps: Any) -> tuple[float, float, float]:
    com = np.asarray(ndimage.center_of_mass(anat_maps.brain))
    c = anat_maps.affine[:3, :3] @ com + anat_maps.affine[:3, 3]
    return (round(float(c[0]), 3), round(float(c[1]), 3), round(float(c[2]), 3))


def sample_subject(
    rng: np.random.Generator, cfg: PhantomConfig, subject: str, seed: list[int]
) -> tuple[SubjectParams, SubjectAnatomy]:
    """Draw one subject's parameters (and return its deformed anatomy, needed to place lesions)."""
    template = template_maps(cfg.resolution_mm)
    dparams = sample_deform(rng, _centre(template), cfg.deform_mm, cfg.scale_sd)
    anat = deform(template, dparams)
    roles = (*cfg.modalities, POST_CONTRAST)
    gain = {m: round(float(rng.uniform(0.8, 1.25)), 4) for m in roles}
    bias = {m: np.round(rng.normal(0.0, cfg.bias_strength / 2, 9), 4).tolist() for m in cfg.modalities}
    bias[POST_CONTRAST] = bias.get("T1w", np.round(rng.normal(0.0, cfg.bias_strength / 2, 9), 4).tolist())
    noise_seed, texture_seed, vessel_seed = (int(s) for s in rng.integers(2**31, size=3))
    n_lesions = int(rng.integers(cfg.lesions_min, cfg.lesions_max + 1))
    n_active = int(rng.choice(len(cfg.active_count_probs), p=np.asarray(cfg.active_count_probs)))
    lesions = sample_lesions(
        rng, anat, n_lesions=n_lesions, n_active=n_active, location_probs=cfg.location_probs,
        real_shape_fraction=cfg.real_shape_fraction, diameter_mm=cfg.diameter_mm,
        halo_radius_mm=cfg.halo_radius_mm, halo_width_mm=cfg.halo_width_mm,
        black_hole_prob=cfg.black_hole_prob, pattern_probs=cfg.pattern_probs, modalities=roles,
    )  # fmt: skip
    domain = None
    if cfg.domain_randomisation.enabled:  # drawn last: anatomy and lesions equal the default cohort's
        domain = sample_domain(rng, cfg.domain_randomisation, roles)
        factor = domain["bias_strength"] / cfg.bias_strength if cfg.bias_strength > 0 else 0.0
        bias = {m: np.round(np.asarray(c) * factor, 4).tolist() for m, c in bias.items()}
    if cfg.lesion_contrasts == "real-lesions":  # drawn after everything else, as the domain
        for lesion in lesions:
            lesion.contrast = _real_contrast(rng, roles)
    if domain and domain.get("confluent") and cfg.domain_randomisation.confluent_contrast == "real-lesions":
        domain["confluent"]["contrast"] = _real_contrast(rng, roles)  # after the lesions, whose draws stay the same
    params = SubjectParams(
        subject, seed, dparams, gain, bias, noise_seed, texture_seed, vessel_seed, n_active, lesions, domain
    )
    return params, anat


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Zero-mean, unit-SD Gaussian-smoothed white noise (drawn at low resolution when sigma is large)."""
    step = max(1, int(sigma_vox // 2))
    coarse = rng.standard_normal(tuple(-(-n // step) for n in shape)).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, sigma_vox / step)
    field_ = ndimage.zoom(coarse, step, order=1)[tuple(slice(0, n) for n in shape)] if step > 1 else coarse
    return (field_ - field_.mean()) / max(float(field_.std()), 1e-6)


def _bias_field(coeffs: list[float], shape: tuple[int, int, int]) -> np.ndarray:
    """exp of a 2nd-order polynomial in coordinates normalised to [-1, 1] (9 coefficients)."""
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    terms = (x, y, z, x * y, x * z, y * z, x**2 - 1 / 3, y**2 - 1 / 3, z**2 - 1 / 3)
    log = sum(c * t for c, t in zip(coeffs, terms, strict=True))
    return np.exp(np.broadcast_to(log, shape)).astype(np.float32)


def _vessels(anat: SubjectAnatomy, seed: int) -> np.ndarray:
    """Post-Gd enhancement weights in [0, 1] of dura, venous sinuses, choroid plexus and cortical veins.

    All lie inside the brain mask, so that an enhancing-label method thresholding the whole brain is caught.
    """
    m, t = anat.maps, anat.template_mm
    sp = m.spacing_mm
    rng = np.random.default_rng(seed)
    inside = m.brain >= 0.5
    depth = ndimage.distance_transform_edt(inside, sampling=sp)
    patchy = _smooth_noise(rng, m.shape, 4.0 / sp)
    dura = inside & (depth <= max(1.5, sp)) & (patchy > 0.3)
    sinus = (
        inside
        & (depth <= max(4.0, sp))
        & (((np.abs(t[0]) < 5) & (t[2] > 15)) | ((t[2] > -25) & (t[2] < -5) & (t[1] < -70)))
    )
    vent = (m.csf > 0.5) & (np.abs(t[0]) < 35) & (t[1] > -50) & (t[1] < 25) & (t[2] > -5) & (t[2] < 32)
    choroid = vent & (np.abs(t[0]) > 12) & (t[1] > -48) & (t[1] < -20) & (t[2] > 0) & (t[2] < 25)
    choroid &= _smooth_noise(rng, m.shape, 1.5 / sp) > -0.2
    veins = inside & (m.csf > 0.3) & ~vent & (depth <= 12.0) & (_smooth_noise(rng, m.shape, 1.0 / sp) > 1.2)
    weight = np.zeros(m.shape, dtype=np.float32)
    weight[veins] = 0.8
    weight[dura] = 0.7
    weight[choroid] = 1.0
    weight[sinus] = 1.0
    return weight


def _real_contrast(rng: np.random.Generator, roles: tuple[str, ...]) -> dict[str, float]:
    """The T1w, T2w and FLAIR contrasts of one measured real lesion, drawn with replacement (a row keeps a lesion's
    modalities together: a faint lesion is faint on all); the post-Gd T1w takes the T1w's (one tissue), other roles
    keep the calibrated level."""
    measured, table = real_lesion_contrasts()
    row = table[int(rng.integers(len(table)))]
    contrast = {r: round(float(v), 4) for r, v in zip(measured, row, strict=True) if r in roles}
    if "T1w" in contrast and POST_CONTRAST in roles:
        contrast[POST_CONTRAST] = contrast["T1w"]
    return contrast


CONFOUNDER_KINDS = {1: "vein through a lesion", 2: "vein along a lesion", 3: "ventricle wall / choroid plexus"}


def lesion_confounders(
    anat: SubjectAnatomy, lesions: list[LesionParams], seed: int, probability: float
) -> tuple[np.ndarray, np.ndarray]:
    """Enhancement that is not a lesion's, placed where a lesion-restricted label derivation would take it in.

    Each lesion, with ``probability``: a vein (0.7 mm radius, running 8-15 mm past the lesion on both sides)
    through it near its centre, or along it, tangent to its border (half each); a periventricular lesion, with
    the same probability again, gets the ventricle CSF within 3 mm of it enhancing (ventricle wall, choroid
    plexus). Deterministic in ``seed``.

    Returns:
        (post-Gd enhancement weights in [0, 1], uint8 kind map: keys of :data:`CONFOUNDER_KINDS`, 0 none).
    """
    m = anat.maps
    sp = m.spacing_mm
    rng = np.random.default_rng([seed, 19])
    weight = np.zeros(m.shape, np.float32)
    kind = np.zeros(m.shape, np.uint8)
    inv = np.linalg.inv(m.affine)
    grid = None
    brain = m.brain >= 0.5
    for lesion in lesions:
        draws = rng.random(4)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        normal = np.cross(direction, rng.normal(size=3))
        normal /= np.linalg.norm(normal)
        radius = float(lesion.bounding_radius_mm)
        centre_vox = (inv @ np.append(lesion.centre_mm, 1.0))[:3]
        if draws[0] < probability:
            along = draws[1] < 0.5
            half_length = radius + 8.0 + 7.0 * draws[2]
            offset = (radius * 0.75 + 0.7) if along else 0.2 * radius * draws[3]
            box_half = int(np.ceil((half_length + 2.0) / sp))
            lo = np.maximum(np.round(centre_vox).astype(int) - box_half, 0)
            hi = np.minimum(np.round(centre_vox).astype(int) + box_half + 1, m.shape)
            if np.all(hi > lo):
                sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
                idx = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"))
                pts = (m.affine[:3, :3] @ idx.reshape(3, -1)).T + m.affine[:3, 3]
                rel = pts - (np.asarray(lesion.centre_mm) + offset * normal)
                t = np.clip(rel @ direction, -half_length, half_length)
                dist = np.linalg.norm(rel - t[:, None] * direction, axis=1).reshape(idx.shape[1:])
                tube = np.clip((0.7 + sp / 2 - dist) / sp, 0.0, 1.0).astype(np.float32) * brain[sl]
                weight[sl] = np.maximum(weight[sl], 0.8 * tube)
                kind[sl][tube >= 0.5] = 2 if along else 1
        if lesion.location == "periventricular" and draws[3] < probability:
            if grid is None:
                grid = np.stack(np.meshgrid(*(np.arange(n) for n in m.shape), indexing="ij")).astype(np.float32)
            near = np.sqrt((((grid - centre_vox[:, None, None, None]) * sp) ** 2).sum(axis=0)) <= radius + 3.0
            wall = near & (m.csf > 0.5) & brain
            weight[wall] = np.maximum(weight[wall], 1.0)
            kind[wall & (kind == 0)] = 3
    return weight, kind


def _acquire(
    rel: dict[str, np.ndarray], params: SubjectParams, noise_sd: dict[str, float], outside: np.ndarray,
    spacing_mm: float,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Relative signal -> images: gain, bias field, Rician noise (seeded), the domain's blur, zero outside."""
    noise_rng = np.random.default_rng(params.noise_seed)
    images = {}
    for role, signal in rel.items():
        shape = signal.shape
        scale = WM_LEVEL * params.gain[role]
        clean = signal * scale * _bias_field(params.bias[role], shape)
        sd = np.float32(noise_sd[role] * scale)
        n1 = noise_rng.standard_normal(shape, dtype=np.float32)
        n2 = noise_rng.standard_normal(shape, dtype=np.float32)
        noisy = np.sqrt((clean + sd * n1) ** 2 + (sd * n2) ** 2)
        if params.domain:
            noisy = apply_blur(noisy, params.domain["fwhm_mm"][role], spacing_mm)
        noisy[outside] = 0.0
        images[role] = noisy.astype(np.float32)
    return images


def render_subject(
    params: SubjectParams, cfg: PhantomConfig, anat: SubjectAnatomy | None = None,
    vessel_lesions: list[LesionParams] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:  # fmt: skip
    """Images (role -> float32, WM ~ 1000 x gain) and masks (role -> bool) of one subject, and the affine.

    Also fills each lesion's ``volume_mm3``, ``enhancing_volume_mm3`` and ``mask_voxels``. ``vessel_lesions``:
    the lesions whose confounding vessels are drawn (default ``params.lesions``; a prior session passes the
    follow-up's, since veins are anatomy and outlast the lesions that come later).
    """
    if anat is None:
        anat = deform(template_maps(cfg.resolution_mm), params.deform)
    m = anat.maps
    shape, affine = m.shape, m.affine
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    roles = (*cfg.modalities, POST_CONTRAST)
    s = cfg.signature_strength
    texture = _smooth_noise(np.random.default_rng(params.texture_seed), shape, 3.0 / m.spacing_mm)
    domain = params.domain
    contrasts = domain["contrasts"] if domain else cfg.contrasts
    noise_sd = domain["noise"] if domain else cfg.noise
    texture_strength = domain["texture"] if domain else cfg.texture_strength
    rel = {}
    for role in roles:
        c = contrasts[role]
        rel[role] = (m.wm + c["GM"] * m.gm + c["CSF"] * m.csf) * (1 + texture_strength * texture)
    lesion_frac = np.zeros(shape, np.float32)
    enh_frac = np.zeros(shape, np.float32)
    if domain and domain.get("confluent"):  # under the discrete lesions, which are painted over it
        band = confluent_fraction(anat, domain["confluent"]["depth_mm"], domain["confluent"]["seed"])
        lesion_frac = np.maximum(lesion_frac, band)
        own_band = domain["confluent"].get("contrast", {})  # a measured real lesion's (``confluent_contrast``)
        for role in roles:
            rel[role] = rel[role] * (1 - band) + band * np.float32(own_band.get(role, contrasts[role]["lesion"]))
    for lesion in params.lesions:
        r = render_lesion(
            lesion, affine, shape, halo_radius_mm=cfg.halo_radius_mm, halo_width_mm=cfg.halo_width_mm,
            supersample=cfg.supersample_factor,
        )  # fmt: skip
        sl = r.slices
        lesion_frac[sl] = np.maximum(lesion_frac[sl], r.lesion)
        enh_frac[sl] = np.maximum(enh_frac[sl], r.enhancing)
        lesion.volume_mm3 = round(float(r.lesion.sum()) * voxel_mm3, 3)
        lesion.enhancing_volume_mm3 = round(float(r.enhancing.sum()) * voxel_mm3, 3)
        lesion.mask_voxels = int((r.lesion >= 0.5).sum())
        sig = s if lesion.active else 0.0
        lesion_texture = _smooth_noise(np.random.default_rng(lesion.texture_seed), r.lesion.shape, 1.0 / m.spacing_mm)
        for role in roles:
            own = (lesion.contrast or {}).get(role)
            contrast = own if own is not None else contrasts[role]["lesion"]
            if lesion.black_hole and role in ("T1w", POST_CONTRAST):
                # randomised: half-way between CSF and the lesion, as the defaults (0.10, 0.35, 0.60)
                contrast = (contrast + contrasts[role]["CSF"]) / 2 if domain else cfg.black_hole_T1
            if "T1w" in cfg.signature_modalities and role in ("T1w", POST_CONTRAST):
                contrast += (1.0 - contrast) * min(1.0, cfg.iso_shift * sig)
            level: Any = np.float32(contrast * (1.0 if own is not None else lesion.contrast_jitter[role]))
            if role == "T2w" and "T2w" in cfg.signature_modalities:
                level = level * (1 + cfg.heterogeneity * sig * lesion_texture)
            img = rel[role]
            img[sl] = img[sl] * (1 - r.lesion) + r.lesion * level
            if role in ("FLAIR", "PD") and role in cfg.signature_modalities and sig > 0:
                img[sl] *= 1 + cfg.halo_gain * sig * r.halo
        if lesion.active:
            rel[POST_CONTRAST][sl] *= 1 + lesion.enhance_gain * r.enhancing
    vessels = _vessels(anat, params.vessel_seed)
    if cfg.lesion_confounders > 0:
        around = params.lesions if vessel_lesions is None else vessel_lesions
        vessels = np.maximum(vessels, lesion_confounders(anat, around, params.vessel_seed, cfg.lesion_confounders)[0])
    rel[POST_CONTRAST] *= 1 + cfg.vessel_gain * vessels
    images = _acquire(rel, params, noise_sd, m.brain < 0.01, m.spacing_mm)
    masks = {"lesion": lesion_frac >= 0.5, "enhancing": enh_frac >= 0.5, "brain": m.brain >= 0.5}
    return images, masks, affine
