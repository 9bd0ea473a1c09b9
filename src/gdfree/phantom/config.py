"""The phantom's configuration (:class:`PhantomConfig`) and its calibrated tissue contrasts.

Default contrasts (tissue / normal-appearing WM medians) were measured on the shared open_ms_data cases
patient07 and patient19 by ``benchmarks/calibrate_phantom.py`` (T1w-k-means tissue classes):

=========  ==============  ===============  ==============  ===========
modality   GM/WM (07, 19)  CSF/WM (07, 19)  lesion/WM       noise SD/WM
=========  ==============  ===============  ==============  ===========
T1w        0.70, 0.68      0.09, 0.10       0.65, 0.55      0.020, 0.030
T2w        1.39, 1.44      3.08, 3.38       2.02, 2.30      0.048, 0.067
FLAIR      1.22, 1.14      0.45, 0.27       1.65, 1.44      0.044, 0.058
T1gd       0.78, 0.74      0.20, 0.11       0.69, 0.54      0.021, 0.032
=========  ==============  ===============  ==============  ===========

PD has no shared real image; its defaults are textbook values (GM/WM 1.15, CSF/WM 1.3, lesion/WM 1.3),
not measurements. Black holes (T1w 0.35 x WM) and the signature gains are design choices.

These medians pool every lesion voxel, so patient19's large confluent lesions dominate them. Lesion by lesion
(the core of each of the 45 consensus lesions of >= 30 mm3, :func:`real_lesion_contrasts`) real lesions are
fainter: T1w 0.53-0.93 x WM (5th-95th percentile; median 0.80), T2w 1.27-2.38 (1.57), FLAIR 1.21-1.70 (1.42).
``lesion_contrasts: real-lesions`` draws each lesion's contrasts from those rows
(``domain_randomisation.confluent_contrast: real-lesions`` a confluent band's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from gdfree.phantom.lesions import LOCATIONS, PATTERNS
from gdfree.phantom.randomise import DomainRandomisation
from gdfree.types import POST_CONTRAST, PRE_CONTRAST, canonical_modality

__all__ = ["CONTRASTS", "LESION_CONTRAST_SOURCES", "NOISE_SD", "SIGNATURE_EFFECTS", "WM_LEVEL", "PhantomConfig",
           "real_lesion_contrasts"]  # fmt: skip


CONTRASTS: dict[str, dict[str, float]] = {
    "T1w": {"GM": 0.69, "CSF": 0.10, "lesion": 0.60},
    "T2w": {"GM": 1.41, "CSF": 3.2, "lesion": 2.15},
    "FLAIR": {"GM": 1.18, "CSF": 0.36, "lesion": 1.55},
    "PD": {"GM": 1.15, "CSF": 1.3, "lesion": 1.3},
    "T1gd": {"GM": 0.76, "CSF": 0.15, "lesion": 0.60},
}


NOISE_SD = {"T1w": 0.025, "T2w": 0.057, "FLAIR": 0.051, "PD": 0.04, "T1gd": 0.026}


SIGNATURE_EFFECTS = {
    "FLAIR": "perilesional oedema: FLAIR x (1 + halo_gain * s) in a shell at halo_radius_mm beyond the border",
    "PD": "perilesional oedema on PD, as for FLAIR",
    "T1w": "iso-intensity: the lesion's T1w (and post-Gd T1w) hypointensity shrinks by iso_shift * s",
    "T2w": "heterogeneity: smooth texture of relative amplitude heterogeneity * s inside the lesion on T2w",
}


WM_LEVEL = 1000.0


LESION_CONTRAST_SOURCES = ("calibrated", "real-lesions")


@functools.lru_cache(maxsize=1)
def real_lesion_contrasts() -> tuple[tuple[str, ...], np.ndarray]:
    """(roles, (n, len(roles)) lesion/WM ratios) of the shipped real lesions (``real_lesion_contrasts.json``,
    measured by ``benchmarks/calibrate_phantom.py --lesions``; source and licence in LESION_SHAPES.md)."""
    import json

    data = json.loads(resources.files("gdfree.phantom").joinpath("real_lesion_contrasts.json").read_text())
    roles = tuple(data["roles"])
    return roles, np.array([[row[r] for r in roles] for row in data["lesions"]], np.float64)


@dataclass(frozen=True)
class PhantomConfig:
    """Every knob of the synthetic cohort (YAML <-> this dataclass; saved with each cohort)."""

    resolution_mm: int = 2
    modalities: tuple[str, ...] = ("T1w", "T2w", "FLAIR", "PD")
    signature_strength: float = 1.0
    signature_modalities: tuple[str, ...] = ("FLAIR", "T1w", "T2w")
    lesions_min: int = 8
    lesions_max: int = 24
    active_count_probs: tuple[float, ...] = (0.40, 0.20, 0.14, 0.10, 0.06, 0.04, 0.03, 0.02, 0.01)
    location_probs: dict[str, float] = field(
        default_factory=lambda: {"periventricular": 0.45, "juxtacortical": 0.2, "deep": 0.25, "infratentorial": 0.1}
    )
    real_shape_fraction: float = 0.5
    diameter_mm: tuple[float, float] = (3.0, 15.0)
    black_hole_prob: float = 0.15
    black_hole_T1: float = 0.35
    pattern_probs: dict[str, float] = field(default_factory=lambda: {"nodular": 0.6, "ring": 0.25, "open_ring": 0.15})
    halo_radius_mm: float = 2.5
    halo_width_mm: float = 1.2
    halo_gain: float = 0.15
    iso_shift: float = 0.6
    heterogeneity: float = 0.25
    contrasts: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in CONTRASTS.items()})
    noise: dict[str, float] = field(default_factory=lambda: dict(NOISE_SD))
    deform_mm: float = 2.0
    scale_sd: float = 0.04
    bias_strength: float = 0.15
    texture_strength: float = 0.03
    vessel_gain: float = 1.0
    lesion_confounders: float = 0.0  # per lesion: probability of an enhancing vein through or along it (and, when
    # periventricular, of enhancing ventricle wall / choroid plexus against it); see :func:`lesion_confounders`
    lesion_contrasts: str = "calibrated"  # or "real-lesions": each lesion's contrasts drawn from the measured real
    # lesions (:func:`real_lesion_contrasts`), in place of the one calibrated level + jitter
    supersample: int = 0  # 0: automatic (about 0.5 mm sub-samples, at least 2 per axis)
    domain_randomisation: DomainRandomisation = field(default_factory=DomainRandomisation)

    def __post_init__(self) -> None:
        if self.resolution_mm not in (1, 2, 4):
            raise ValueError(f"resolution_mm: expected 1, 2 or 4, got {self.resolution_mm}")
        mods = tuple(canonical_modality(m) for m in self.modalities)
        sig = tuple(canonical_modality(m) for m in self.signature_modalities)
        if any(m not in PRE_CONTRAST for m in mods):
            raise ValueError(f"modalities {self.modalities}: expected pre-contrast ones of {PRE_CONTRAST}")
        if any(m not in PRE_CONTRAST for m in sig):
            raise ValueError(f"signature_modalities {self.signature_modalities}: expected some of {PRE_CONTRAST}")
        if self.lesion_contrasts not in LESION_CONTRAST_SOURCES:
            raise ValueError(f"lesion_contrasts: expected one of {', '.join(LESION_CONTRAST_SOURCES)}, "
                             f"got {self.lesion_contrasts!r}")  # fmt: skip
        if self.signature_strength < 0:
            raise ValueError(f"signature_strength: expected >= 0, got {self.signature_strength}")
        if not 0 <= self.lesions_min <= self.lesions_max:
            raise ValueError(
                f"lesions_min/lesions_max: expected 0 <= min <= max, got {self.lesions_min}, {self.lesions_max}"
            )
        if len(self.active_count_probs) - 1 > self.lesions_min:
            raise ValueError(
                f"active_count_probs allows {len(self.active_count_probs) - 1} active lesions but lesions_min is "
                f"{self.lesions_min}: the active count would then depend on the lesion count (a pre-contrast cue)"
            )
        if abs(sum(self.active_count_probs) - 1) > 1e-6 or min(self.active_count_probs) < 0:
            raise ValueError(f"active_count_probs: expected probabilities summing to 1, got {self.active_count_probs}")
        for name, probs, allowed in (("location_probs", self.location_probs, LOCATIONS),
                                     ("pattern_probs", self.pattern_probs, PATTERNS)):  # fmt: skip
            if set(probs) - set(allowed) or sum(probs.values()) <= 0 or min(probs.values()) < 0:
                raise ValueError(f"{name} {probs}: expected non-negative weights over {', '.join(allowed)}")
        for m in (*mods, POST_CONTRAST):
            if m not in self.contrasts or m not in self.noise:
                raise ValueError(f"contrasts/noise: missing an entry for {m}")
            if self.domain_randomisation.enabled and m not in self.domain_randomisation.ranges:
                raise ValueError(f"domain_randomisation.ranges: missing an entry for {m}")
        object.__setattr__(self, "modalities", mods)
        object.__setattr__(self, "signature_modalities", sig)

    @property
    def supersample_factor(self) -> int:
        return self.supersample or max(2, 2 * self.resolution_mm)
