"""The residual errors of a real registered prior, drawn on training patches of phantom pairs (issue 32).

On the real longitudinal pairs the FLAIR difference is largest, where nothing changed, at ventricle walls, along
the cortex and across thick slices: partial volume that differs between two acquisitions of a moved head, a
residual misalignment, and an intensity mismatch the matching leaves (docs/longitudinal.md). The phantom's pairs
have almost none of it (both sessions on one grid, the same blur), so a network trained on them reads every such
edge as new. With :attr:`PairArtefacts.probability` a training patch's prior channel gets all three:

- a residual rigid misalignment: a rotation of up to :data:`ROTATION_DEGREES` about a random axis through the patch
  centre and a shift of up to :data:`SHIFT_VOXELS` per axis (trilinear);
- another slice profile: a Gaussian blur of up to :data:`SLICE_SIGMA_VOXELS` along one random axis;
- an intensity mismatch: a gain of 1 +- :data:`GAIN` on the patch's deviations from its brain median, and a linear
  ramp of up to +- :data:`RAMP` (normalised units) across the patch.

The difference channel gets the same change in its own units, ``c * (prior before - prior after)`` inside the
brain, as if the difference had been formed from the altered prior. ``c`` is the case's ratio of the difference
channel's spread to that of FLAIR minus prior inside the brain (median absolute deviations), measured once per case.
Labels stay: an artefact is no new lesion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["GAIN", "RAMP", "ROTATION_DEGREES", "SHIFT_VOXELS", "SLICE_SIGMA_VOXELS", "PairArtefacts"]

ROTATION_DEGREES = 1.5
SHIFT_VOXELS = 0.5
SLICE_SIGMA_VOXELS = 1.0
GAIN = 0.06
RAMP = 0.1


@dataclasses.dataclass
class PairArtefacts:
    """Draws pair artefacts on patches (module docstring); channel indices in the model's ``modalities`` order."""

    probability: float
    flair: int
    prior: int
    difference: int
    scales: dict[int, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def for_inputs(cls, probability: float, modalities: Sequence[str]) -> PairArtefacts | None:
        """The artefacts for a model with these input roles; None without prior-exam channels or at probability 0."""
        if probability <= 0 or "priorFLAIR" not in modalities:
            return None
        index = list(modalities).index
        return cls(probability, index("FLAIR"), index("priorFLAIR"), index("diffFLAIR"))

    def scale(self, case: int, image: np.ndarray, brain: np.ndarray) -> float:
        """``c`` of one case (cached): MAD of the difference over MAD of FLAIR minus prior inside the brain."""
        if case not in self.scales:
            inside = brain & (image[self.difference] != 0)
            if inside.sum() < 100:
                self.scales[case] = 0.0  # an exam without a prior: its difference is 0 everywhere
            else:
                d = image[self.difference][inside]
                g = (image[self.flair] - image[self.prior])[inside]
                mad_g = float(np.median(np.abs(g - np.median(g))))
                self.scales[case] = float(np.median(np.abs(d - np.median(d)))) / mad_g if mad_g > 0 else 0.0
        return self.scales[case]

    def apply(self, image: np.ndarray, brain: np.ndarray, scale: float, rng: np.random.Generator) -> None:
        """Alter one patch's prior and difference channels in place with :attr:`probability` (``scale``: the
        case's ``c``; 0, an exam without a prior, leaves the patch)."""
        if scale <= 0 or rng.random() >= self.probability:
            return
        before = image[self.prior].copy()
        after = _misalign(before, rng)
        axis = int(rng.integers(3))
        sigma = [0.0, 0.0, 0.0]
        sigma[axis] = float(rng.uniform(0.0, SLICE_SIGMA_VOXELS))
        after = ndimage.gaussian_filter(after, sigma, mode="nearest")
        centre = float(np.median(after[brain])) if brain.any() else 0.0
        after = centre + (after - centre) * (1.0 + float(rng.uniform(-GAIN, GAIN)))
        along = int(rng.integers(3))
        ramp = np.linspace(-1.0, 1.0, after.shape[along], dtype=np.float32)
        after = after + float(rng.uniform(-RAMP, RAMP)) * np.expand_dims(ramp, [a for a in range(3) if a != along])
        image[self.prior] = after.astype(np.float32)
        image[self.difference] += np.where(brain, scale * (before - after), 0.0).astype(np.float32)


def _misalign(volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``volume`` rotated about a random axis through its centre and shifted (module docstring's bounds)."""
    angle = np.deg2rad(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    about = int(rng.integers(3))
    plane = [a for a in range(3) if a != about]
    rotation = np.eye(3)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation[plane[0], plane[0]], rotation[plane[0], plane[1]] = cos, -sin
    rotation[plane[1], plane[0]], rotation[plane[1], plane[1]] = sin, cos
    centre = (np.asarray(volume.shape, float) - 1) / 2
    offset = centre - rotation @ centre + rng.uniform(-SHIFT_VOXELS, SHIFT_VOXELS, 3)
    return ndimage.affine_transform(volume, rotation, offset=offset, order=1, mode="nearest")
