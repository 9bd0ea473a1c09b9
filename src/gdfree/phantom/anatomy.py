"""Per-subject smooth deformations of the template anatomy (:mod:`gdfree.io.templates`: nilearn's shipped MNI152
2009a tissue maps, which ``prepare``'s atlas brain mask reads too)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gdfree.io.templates import TemplateMaps, template_maps

__all__ = ["DeformParams", "SubjectAnatomy", "TemplateMaps", "deform", "sample_deform", "template_maps"]


@dataclass(frozen=True)
class DeformParams:
    """A smooth subject deformation: global scaling about the brain centre plus a B-spline-like field.

    ``scale`` per axis; ``control_mm`` displacement (mm) at a coarse control grid of shape
    (3, cx, cy, cz), upsampled by cubic interpolation to every voxel.
    """

    scale: tuple[float, float, float]
    centre_mm: tuple[float, float, float]
    control_mm: list  # nested lists, JSON-friendly: (3, cx, cy, cz)


def sample_deform(
    rng: np.random.Generator, centre_mm: tuple[float, float, float], amplitude_mm: float, scale_sd: float
) -> DeformParams:
    """Draw deformation parameters (``amplitude_mm`` = SD of control displacements)."""
    scale = tuple(float(s) for s in np.clip(1.0 + scale_sd * rng.standard_normal(3), 0.8, 1.2))
    control = amplitude_mm * rng.standard_normal((3, 5, 6, 5))
    return DeformParams((scale[0], scale[1], scale[2]), centre_mm, np.round(control, 4).tolist())


@dataclass(frozen=True, eq=False)
class SubjectAnatomy:
    """A subject's tissue fractions on the output grid, and where each voxel came from in the template.

    ``template_mm``: (3, X, Y, Z) float32 template (MNI) coordinate of each voxel centre.
    """

    maps: TemplateMaps
    template_mm: np.ndarray


def _field(params: DeformParams, shape: tuple[int, int, int]) -> np.ndarray:
    """Cubic upsampling of the control grid, done separably with one small weight matrix per axis."""
    control = np.asarray(params.control_mm, dtype=np.float64)
    out = control
    for axis, n in enumerate(shape, start=1):
        c = control.shape[axis]
        weights = ndimage.zoom(np.eye(c), (n / c, 1.0), order=3, mode="nearest", grid_mode=True)[:n]  # (n, c)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    return out.astype(np.float32)


def deform(template: TemplateMaps, params: DeformParams) -> SubjectAnatomy:
    """Warp the template's tissue maps into a subject: voxel x samples the template at T(x).

    T(x) = c + (A x - c) / scale + d(x), with A the grid affine and d the smooth field, so the output
    grid (and its affine) is the template's.
    """
    shape = template.shape
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = template.affine[:3, :3].astype(np.float32) @ idx + template.affine[:3, 3:4].astype(np.float32)
    centre = np.asarray(params.centre_mm, dtype=np.float32)[:, None]
    scale = np.asarray(params.scale, dtype=np.float32)[:, None]
    t_mm = centre + (world - centre) / scale + _field(params, shape).reshape(3, -1)
    inv = np.linalg.inv(template.affine).astype(np.float32)
    t_vox = inv[:3, :3] @ t_mm + inv[:3, 3:4]
    warped = [
        ndimage.map_coordinates(m, t_vox, order=1, mode="constant", cval=0.0, prefilter=False).reshape(shape)
        for m in (template.gm, template.wm, template.csf, template.brain)
    ]
    gm, wm, csf, brain = (np.clip(w, 0.0, 1.0).astype(np.float32) for w in warped)
    maps = TemplateMaps(gm, wm, csf, brain, template.affine)
    return SubjectAnatomy(maps, t_mm.reshape(3, *shape))
