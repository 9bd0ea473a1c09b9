"""The MNI152 2009a tissue maps that nilearn ships inside its package (nothing is downloaded).

The brain mask is nilearn's own (T1 template > 0.2); CSF = brain - GM - WM, clipped to [0, 1]. Coarser grids
are made by block averaging, so every voxel holds the tissue fractions of the 1 mm voxels it covers (partial
volume). The phantom's anatomy and ``prepare``'s atlas brain mask read them here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["TemplateMaps", "template_maps"]


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
