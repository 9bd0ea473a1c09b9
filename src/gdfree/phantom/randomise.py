"""Domain randomisation of the phantom (SynthSeg-style, Billot et al., Medical Image Analysis 2023).

A network trained on phantoms with the measured default contrasts learns those contrasts; real scanners,
sequences and preprocessing give others. With ``domain_randomisation.enabled`` every subject draws its own
tissue and lesion contrasts per modality (uniform in :attr:`DomainRandomisation.ranges`, redrawn until the
physiological ordering of :data:`ORDERINGS` holds with a margin), its own noise level, bias-field strength,
smooth texture, and an acquisition blur per modality (in-plane resolution and a slice thickness along a
random axis), so that a real exam is one more draw of the family the network was trained on.

What is kept: which tissue is brighter than which on each modality (:data:`ORDERINGS`). What is not: the
ratios themselves, the noise, the resolution. Parameters are drawn by :func:`sample_domain` from the
subject's generator and stored in its ``sub-*_phantom.json``, so a subject replays exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["ORDERINGS", "DomainRandomisation", "apply_blur", "check_ordering", "confluent_fraction", "sample_domain"]

ORDERINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "T1w": (("CSF", "GM"), ("GM", "WM"), ("CSF", "lesion"), ("lesion", "WM")),
    "T1gd": (("CSF", "GM"), ("GM", "WM"), ("CSF", "lesion"), ("lesion", "WM")),
    "T2w": (("WM", "GM"), ("GM", "CSF"), ("WM", "lesion")),
    "FLAIR": (("CSF", "WM"), ("WM", "GM"), ("GM", "lesion")),
    "PD": (("WM", "GM"), ("WM", "lesion")),
}
"""Per modality, pairs (darker, brighter) of tissue classes that every randomised subject keeps
(intensities relative to white matter, WM = 1)."""

_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "T1w": {"GM": (0.5, 0.9), "CSF": (0.03, 0.45), "lesion": (0.3, 0.93)},
    "T2w": {"GM": (1.08, 1.9), "CSF": (1.8, 4.5), "lesion": (1.25, 3.2)},
    "FLAIR": {"GM": (1.03, 1.45), "CSF": (0.08, 0.85), "lesion": (1.2, 2.4)},
    "PD": {"GM": (1.03, 1.35), "CSF": (0.8, 1.8), "lesion": (1.08, 1.8)},
    "T1gd": {"GM": (0.5, 0.95), "CSF": (0.03, 0.5), "lesion": (0.3, 0.95)},
}


@dataclass(frozen=True)
class DomainRandomisation:
    """Ranges of the per-subject draws (``enabled: false`` keeps the measured defaults of the phantom).

    Attributes:
        ranges: modality -> tissue (GM, CSF, lesion) -> (low, high) of its intensity relative to WM.
        margin: a pair of :data:`ORDERINGS` must differ by at least this factor (brighter >= darker x margin).
        noise: (low, high) of the Rician noise SD relative to WM, per modality.
        bias_strength: (low, high) of the bias-field coefficient SD (the default phantom uses 0.15).
        texture: (low, high) of the smooth tissue texture amplitude.
        in_plane_mm: (low, high) of the acquired in-plane resolution (FWHM of the blur, mm).
        slice_mm: (low, high) of the slice thickness (FWHM along one random axis, mm).
        confluent_probability: share of subjects that also get a confluent periventricular lesion (a band of
            white matter along the lateral ventricles of irregular depth: the large lesions of advanced MS
            that discrete lesions never form; chronic, labelled lesion). 0 by default.
        confluent_depth_mm: (low, high) of the band's mean depth from the ventricle wall.
        confluent_contrast: ``randomised`` (the subject's randomised lesion level, the default) or ``real-lesions``
            (one measured real lesion's contrasts, :func:`gdfree.phantom.config.real_lesion_contrasts`, drawn after
            everything else; far fainter on FLAIR in most subjects).
    """

    enabled: bool = False
    ranges: dict[str, dict[str, tuple[float, float]]] = field(
        default_factory=lambda: {m: dict(r) for m, r in _RANGES.items()}
    )
    margin: float = 1.08
    noise: tuple[float, float] = (0.01, 0.09)
    bias_strength: tuple[float, float] = (0.0, 0.5)
    texture: tuple[float, float] = (0.0, 0.08)
    in_plane_mm: tuple[float, float] = (1.0, 2.5)
    slice_mm: tuple[float, float] = (1.0, 6.0)
    confluent_probability: float = 0.0
    confluent_depth_mm: tuple[float, float] = (2.0, 10.0)
    confluent_contrast: str = "randomised"

    def __post_init__(self) -> None:
        if self.confluent_contrast not in ("randomised", "real-lesions"):
            raise ValueError(f"domain_randomisation.confluent_contrast: expected randomised or real-lesions, got "
                             f"{self.confluent_contrast!r}")  # fmt: skip
        if not 0 <= self.confluent_probability <= 1:
            raise ValueError(
                f"domain_randomisation.confluent_probability: expected [0, 1], got {self.confluent_probability}"
            )
        for name in ("noise", "bias_strength", "texture", "in_plane_mm", "slice_mm", "confluent_depth_mm"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"domain_randomisation.{name}: expected 0 <= low <= high, got {lo}, {hi}")
        if self.margin < 1:
            raise ValueError(f"domain_randomisation.margin: expected >= 1, got {self.margin}")
        for modality, tissues in self.ranges.items():
            for tissue, (lo, hi) in tissues.items():
                if tissue not in ("GM", "CSF", "lesion") or not 0 < lo <= hi:
                    raise ValueError(
                        f"domain_randomisation.ranges.{modality}.{tissue}: expected GM, CSF or lesion with "
                        f"0 < low <= high, got {lo}, {hi}"
                    )


def check_ordering(modality: str, contrasts: dict[str, float], margin: float = 1.0) -> list[str]:
    """The pairs of :data:`ORDERINGS` that ``contrasts`` (tissue -> level relative to WM) break."""
    level = {"WM": 1.0, **contrasts}
    return [f"{dark} < {bright}" for dark, bright in ORDERINGS.get(modality, ())
            if not level[bright] >= level[dark] * margin]  # fmt: skip


def _draw_contrasts(
    rng: np.random.Generator, modality: str, cfg: DomainRandomisation, tries: int = 1000
) -> dict[str, float]:
    ranges = cfg.ranges[modality]
    for _ in range(tries):
        drawn = {t: round(float(rng.uniform(lo, hi)), 4) for t, (lo, hi) in ranges.items()}
        if not check_ordering(modality, drawn, cfg.margin):
            return drawn
    raise ValueError(
        f"domain_randomisation.ranges.{modality}: {tries} draws never kept the ordering "
        f"{', '.join(f'{a} < {b}' for a, b in ORDERINGS[modality])}; widen or move the ranges"
    )


def sample_domain(rng: np.random.Generator, cfg: DomainRandomisation, roles: tuple[str, ...]) -> dict[str, Any]:
    """One subject's draws (JSON-ready): ``contrasts`` and ``noise`` per role, ``bias_strength``, ``texture``,
    ``fwhm_mm`` per role (three axes: the in-plane resolution, and the slice thickness on one random axis).

    The post-Gd T1w shares the T1w draw's slice axis and blur (one acquisition protocol, before and after Gd).
    """
    contrasts = {m: _draw_contrasts(rng, m, cfg) for m in roles}
    noise = {m: round(float(rng.uniform(*cfg.noise)), 4) for m in roles}
    fwhm: dict[str, list[float]] = {}
    for m in roles:
        if m == "T1gd" and "T1w" in fwhm:
            fwhm[m] = list(fwhm["T1w"])
            continue
        in_plane = float(rng.uniform(*cfg.in_plane_mm))
        axes = [in_plane] * 3
        axes[int(rng.integers(3))] = max(in_plane, float(rng.uniform(*cfg.slice_mm)))
        fwhm[m] = [round(a, 3) for a in axes]
    out = {
        "contrasts": contrasts,
        "noise": noise,
        "bias_strength": round(float(rng.uniform(*cfg.bias_strength)), 4),
        "texture": round(float(rng.uniform(*cfg.texture)), 4),
        "fwhm_mm": fwhm,
        "confluent": None,
    }
    if cfg.confluent_probability > 0 and rng.random() < cfg.confluent_probability:
        out["confluent"] = {"depth_mm": round(float(rng.uniform(*cfg.confluent_depth_mm)), 3),
                            "seed": int(rng.integers(2**31))}  # fmt: skip
    return out


def confluent_fraction(anat: Any, depth_mm: float, seed: int) -> np.ndarray:
    """Fraction map (float32 in [0, 1]) of a confluent periventricular lesion: white matter within an
    irregular depth (``depth_mm`` x (1 + 0.6 x smooth noise), at least 1 mm) of the lateral ventricles."""
    from gdfree.phantom.lesions import lateral_ventricles

    m = anat.maps
    t = anat.template_mm
    sp = m.spacing_mm
    vent = lateral_ventricles(anat)
    if not vent.any():
        return np.zeros(m.shape, np.float32)
    distance = ndimage.distance_transform_edt(~vent, sampling=sp)
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(m.shape), 6.0 / sp)
    noise /= max(float(noise.std()), 1e-6)
    depth = np.maximum(depth_mm * (1 + 0.6 * noise), 1.0)
    inside = np.clip((depth - distance) / sp + 0.5, 0.0, 1.0) * (distance > 0)
    return (inside * np.clip(m.wm / 0.5, 0.0, 1.0) * (t[2] > -2)).astype(np.float32)


def apply_blur(image: np.ndarray, fwhm_mm: list[float], spacing_mm: float) -> np.ndarray:
    """Gaussian blur of an image on a ``spacing_mm`` grid to an acquired resolution of ``fwhm_mm`` per axis
    (the grid's own voxel size counts as already there: sigma = sqrt(fwhm^2 - spacing^2) / 2.355)."""
    sigma = [np.sqrt(max(f * f - spacing_mm * spacing_mm, 0.0)) / 2.3548 / spacing_mm for f in fwhm_mm]
    if max(sigma) <= 0:
        return image
    return ndimage.gaussian_filter(image, sigma, mode="nearest").astype(np.float32)
