"""Template anatomy (nilearn's shipped MNI152 2009a maps) and per-subject smooth deformations.

Nothing is downloaded: nilearn ships the 1 mm T1, GM and WM templates inside its package. The brain
mask is nilearn's own (T1 template > 0.2); CSF = brain - GM - WM, clipped to [0, 1]. Coarser grids are
made by block averaging, so every voxel holds the tissue fractions of the 1 mm voxels it covers
(partial volume).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["DeformParams", "SubjectAnatomy", "TemplateMaps", "deform", "sample_deform", "template_maps"]


@dataclass(frozen=True, eq=False)
class TemplateMaps:
    """Tissue fraction maps (float32 in [0, 1], shape (X, Y, Z)) on one grid, with its RAS+ affine."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.gm.shape
        return (x, y, z)

    @property
    def spacing_mm(self) -> float:
        return float(self.affine[0, 0])


def _block_mean(data: np.ndarray, factor: int) -> np.ndarray:
    pad = [(0, (-n) % factor) for n in data.shape]
    data = np.pad(data, pad)
    x, y, z = (n // factor for n in data.shape)
    return data.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


@functools.lru_cache(maxsize=4)
def template_maps(resolution_mm: int) -> TemplateMaps:
    """The MNI152 2009a tissue maps at 1, 2 or 4 mm (block averages of the 1 mm maps), cached.

    Raises:
        ValueError: ``resolution_mm`` is not 1, 2 or 4.
    """
    if resolution_mm not in (1, 2, 4):
        raise ValueError(f"resolution_mm: expected 1, 2 or 4, got {resolution_mm!r}")
    from nilearn import datasets  # ships these files; none of these functions downloads

    t1_img = datasets.load_mni152_template(resolution=1)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    brain = (np.asarray(t1_img.get_fdata()) > 0.2).astype(np.float32)
    gm = np.minimum(gm, brain)
    wm = np.minimum(wm, brain - gm)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    if resolution_mm > 1:
        f = resolution_mm
        gm, wm, csf, brain = (_block_mean(a, f) for a in (gm, wm, csf, brain))
        scale = np.diag([f, f, f, 1.0])
        shift = np.eye(4)
        shift[:3, 3] = (f - 1) / 2.0  # new voxel 0 is centred on the middle of old voxels 0..f-1
        affine = affine @ shift @ scale
    return TemplateMaps(gm, wm, csf, brain, affine)


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
