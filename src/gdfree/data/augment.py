"""Replayable MRI augmentation of training patches: parameters are sampled, then applied by TorchIO.

Every random draw comes from the ``numpy.random.Generator`` passed in (never from torch's global
generator): :func:`sample_params` draws the parameters of each transform that fires, as a JSON-ready list,
and :func:`apply` applies exactly those with TorchIO's deterministic transforms (``Flip``, ``Affine``,
``ElasticDeformation``, ``BiasField``, ``Gamma``, ``Noise``, ``Motion``, ``Ghosting``, ``Spike``, and two
``Resample`` steps for anisotropy) and gdfree's own lesion-contrast scaling (no TorchIO transform does it). So
an augmented patch is reproduced from its logged parameters alone.
Spatial transforms move the image and every label together (labels with nearest neighbour); intensity
transforms touch the image only. Ranges are TorchIO's defaults scaled by ``strength``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AugmentConfig", "apply", "augment", "sample_params", "scale_lesion_contrast"]

TRANSFORMS = ("flip", "affine", "elastic", "anisotropy", "motion", "ghosting", "spike", "bias", "gamma", "noise",
              "lesion_contrast")
"""Order in which the transforms are drawn and applied (spatial first, then artefacts, then intensity)."""


@dataclass(frozen=True)
class AugmentConfig:
    """Probability of each transform per patch, and its range at strength 1 (a YAML mapping ``augmentation:``).

    Attributes:
        flip..noise: probabilities in [0, 1] (the first four defaults are the transforms gdfree always used;
            the MRI artefacts are off unless asked for).
        scale, degrees, translation_mm: affine ranges (+-). elastic_mm: maximum elastic displacement.
        anisotropy_max: largest spacing factor of the simulated thick-slice axis (>= 1).
        motion_degrees, motion_mm: motion ranges. ghosts: maximum ghost count. spikes: maximum spike count.
        bias: bias-field coefficient range. log_gamma: gamma exponent range in log space. noise_std: maximum
        noise standard deviation (the patch is z-scored, so in units of its spread).
        lesion_contrast: probability of scaling every labelled lesion's contrast to its surroundings (each
            channel, a soft edge) by a factor drawn in [``lesion_contrast_min``, 1] (at strength 1): fainter
            lesions, as real FLAIR and T2w lesions are against a real brain's spread than the phantom's
            (docs/real_lesions.md). Off by default; its draw is skipped entirely when off, so other runs'
            random streams do not change.
    """

    flip: float = 0.5
    affine: float = 0.5
    elastic: float = 0.0
    anisotropy: float = 0.0
    motion: float = 0.0
    ghosting: float = 0.0
    spike: float = 0.0
    bias: float = 0.3
    gamma: float = 0.0
    noise: float = 0.3
    scale: float = 0.1
    degrees: float = 10.0
    translation_mm: float = 0.0
    elastic_mm: float = 4.0
    anisotropy_max: float = 4.0
    motion_degrees: float = 5.0
    motion_mm: float = 5.0
    ghosts: int = 6
    spikes: int = 1
    bias_coefficient: float = 0.2
    log_gamma: float = 0.3
    noise_std: float = 0.1
    lesion_contrast: float = 0.0
    lesion_contrast_min: float = 0.3

    def __post_init__(self) -> None:
        for name in TRANSFORMS:
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augmentation.{name}: expected a probability in [0, 1], got {p}")
        for name in ("scale", "degrees", "translation_mm", "elastic_mm", "motion_degrees", "motion_mm",
                     "bias_coefficient", "log_gamma", "noise_std"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation.{name}: expected >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.lesion_contrast_min <= 1.0:
            raise ValueError(f"augmentation.lesion_contrast_min: expected a factor in [0, 1], got "
                             f"{self.lesion_contrast_min}")  # fmt: skip
        if self.anisotropy_max < 1 or self.ghosts < 1 or self.spikes < 1:
            raise ValueError("augmentation.anisotropy_max, ghosts and spikes: expected >= 1")


def sample_params(cfg: AugmentConfig, strength: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The transforms that fire for one patch and their parameters (JSON-ready), drawn from ``rng`` only.

    ``strength`` scales every range; 0 (or less) returns ``[]``, which :func:`apply` leaves unchanged.
    """
    if strength <= 0:
        return []

    def sym(r: float, n: int = 3) -> list[float]:
        return [float(v) for v in rng.uniform(-r * strength, r * strength, n)]

    out: list[dict[str, Any]] = []
    for name in TRANSFORMS:
        if name == "lesion_contrast" and cfg.lesion_contrast == 0:
            continue  # no draw: runs without it keep their random stream
        if rng.random() >= getattr(cfg, name):
            continue
        if name == "flip":
            out.append({"name": name, "axes": [0]})
        elif name == "affine":
            out.append({"name": name, "scales": [1 + s for s in sym(cfg.scale)], "degrees": sym(cfg.degrees),
                        "translation": sym(cfg.translation_mm)})  # fmt: skip
        elif name == "elastic":
            points = rng.uniform(-cfg.elastic_mm * strength, cfg.elastic_mm * strength, (7, 7, 7, 3))
            out.append({"name": name, "control_points": points.round(4).tolist(),
                        "max_displacement": [cfg.elastic_mm * strength] * 3})  # fmt: skip
        elif name == "anisotropy":
            factor = float(rng.uniform(1.0, 1.0 + (cfg.anisotropy_max - 1.0) * min(strength, 1.0)))
            out.append({"name": name, "axis": int(rng.integers(3)), "factor": factor})
        elif name == "motion":
            out.append({"name": name, "degrees": [sym(cfg.motion_degrees), sym(cfg.motion_degrees)],
                        "translation": [sym(cfg.motion_mm), sym(cfg.motion_mm)],
                        "times": sorted(float(t) for t in rng.uniform(0.2, 0.8, 2))})  # fmt: skip
        elif name == "ghosting":
            out.append({"name": name, "num_ghosts": int(rng.integers(2, cfg.ghosts + 1)), "axis": int(rng.integers(3)),
                        "intensity": float(rng.uniform(0.5, 1.0) * min(strength, 1.0))})  # fmt: skip
        elif name == "spike":
            n = int(rng.integers(1, cfg.spikes + 1))
            out.append({"name": name, "positions": rng.random((n, 3)).round(4).tolist(),
                        "intensity": float(rng.uniform(0.1, 1.0) * strength)})  # fmt: skip
        elif name == "bias":
            out.append({"name": name, "coefficients": sym(cfg.bias_coefficient, 20), "order": 3})  # 20 terms
        elif name == "gamma":
            out.append({"name": name, "gamma": float(np.exp(rng.uniform(-1, 1) * cfg.log_gamma * strength))})
        elif name == "lesion_contrast":
            low = 1.0 - (1.0 - cfg.lesion_contrast_min) * min(strength, 1.0)
            out.append({"name": name, "factor": float(rng.uniform(low, 1.0))})
        else:
            out.append({"name": name, "std": float(rng.uniform(0, cfg.noise_std * strength)),
                        "seed": int(rng.integers(2**31))})  # fmt: skip
    return out


def _transform(p: dict[str, Any]) -> Any:
    import torchio as tio
    from torchio.transforms.augmentation.intensity.random_bias_field import BiasField
    from torchio.transforms.augmentation.intensity.random_gamma import Gamma
    from torchio.transforms.augmentation.intensity.random_ghosting import Ghosting
    from torchio.transforms.augmentation.intensity.random_motion import Motion
    from torchio.transforms.augmentation.intensity.random_noise import Noise
    from torchio.transforms.augmentation.intensity.random_spike import Spike
    from torchio.transforms.augmentation.spatial.random_elastic_deformation import ElasticDeformation
    from torchio.transforms.augmentation.spatial.random_flip import Flip

    name = p["name"]
    if name == "flip":
        return Flip(axes=tuple(p["axes"]))
    if name == "affine":
        return tio.Affine(scales=p["scales"], degrees=p["degrees"], translation=p["translation"],
                          default_pad_value="minimum")  # fmt: skip
    if name == "elastic":
        return ElasticDeformation(np.asarray(p["control_points"]), tuple(p["max_displacement"]))
    if name == "motion":
        return Motion(np.asarray(p["degrees"]), np.asarray(p["translation"]), np.asarray(p["times"]), "linear",
                      include=["image"])  # fmt: skip
    if name == "ghosting":
        return Ghosting(p["num_ghosts"], p["axis"], p["intensity"], 0.02, include=["image"])
    if name == "spike":
        return Spike(np.asarray(p["positions"]), p["intensity"], include=["image"])
    if name == "bias":
        return BiasField(p["coefficients"], p["order"], include=["image"])
    if name == "gamma":
        return Gamma(p["gamma"], include=["image"])
    if name == "noise":
        return Noise(0.0, p["std"], p["seed"], include=["image"])
    raise ValueError(f"augmentation parameters: unknown transform {name!r}")


def apply(
    params: list[dict[str, Any]], image: np.ndarray, target: np.ndarray, continuous: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Apply logged parameters to one (C, P, P, P) image patch and its (H, P, P, P) binary targets.

    Target channels listed in ``continuous`` are images (the ``t1gd`` head's post-Gd T1w): they follow the
    spatial transforms with linear interpolation and no intensity transform, and are not binarised.
    Deterministic: the same parameters give the same output. ``[]`` returns the inputs unchanged.
    """
    if not params:
        return image, target
    import torch
    import torchio as tio

    images = {"image": tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(image))),
              "target": tio.LabelMap(tensor=torch.from_numpy(np.ascontiguousarray(target)))}  # fmt: skip
    if continuous:
        images["reference"] = tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(target[list(continuous)])))
    subject: Any = tio.Subject(**images)
    for p in params:
        if p["name"] == "anisotropy":  # thick slices along one axis, back on the patch grid (image only)
            spacing = [1.0, 1.0, 1.0]
            spacing[p["axis"]] = p["factor"]
            thick = (spacing[0], spacing[1], spacing[2])
            down = tio.Resample(thick, image_interpolation="nearest", include=["image"])(subject)
            subject = tio.Resample("target", image_interpolation="bspline", include=["image"])(down)
        elif p["name"] == "lesion_contrast":
            binary = [h for h in range(target.shape[0]) if h not in continuous]
            scaled = scale_lesion_contrast(subject["image"].data.numpy(), subject["target"].data.numpy()[binary] > 0.5,
                                           p["factor"])  # fmt: skip
            subject["image"].set_data(torch.from_numpy(scaled))
        else:
            subject = _transform(p)(subject)
    out_image = subject["image"].data.numpy().astype(np.float32)
    out_target = (subject["target"].data.numpy() > 0.5).astype(np.float32)
    if continuous:
        out_target[list(continuous)] = subject["reference"].data.numpy()
    return out_image, out_target


def augment(
    cfg: AugmentConfig, strength: float, image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
    continuous: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:  # fmt: skip
    """Sample parameters with ``rng`` and apply them; returns the image, targets and the parameters
    (``continuous``: see :func:`apply`)."""
    params = sample_params(cfg, strength, rng)
    out_image, out_target = apply(params, image, target, continuous)
    return out_image, out_target, params


def scale_lesion_contrast(image: np.ndarray, lesions: np.ndarray, factor: float) -> np.ndarray:
    """(C, P, P, P) ``image`` with every channel's lesion contrast scaled by ``factor``: inside the union of the
    (H, P, P, P) ``lesions`` masks (softened by a Gaussian of 1 voxel cut at 2), each voxel moves towards the median of
    its channel in a 2-4 voxel shell around the lesions (non-zero voxels only). Nothing else changes."""
    from scipy import ndimage

    lesion = np.asarray(lesions, bool).any(axis=0)
    if not lesion.any() or factor == 1.0:
        return image
    near = ndimage.binary_dilation(lesion, iterations=2)
    shell = ndimage.binary_dilation(near, iterations=2) & ~near
    soft = np.clip(ndimage.gaussian_filter(lesion.astype(np.float32), 1.0, truncate=2.0) * 2.0, 0.0, 1.0)
    soft = np.maximum(soft, lesion)
    out = image.astype(np.float32, copy=True)
    for c in range(image.shape[0]):
        ring = shell & (image[c] != 0)
        if not ring.any():
            continue
        reference = float(np.median(image[c][ring]))
        out[c] = image[c] + (factor - 1.0) * soft * (image[c] - reference)
    return out
