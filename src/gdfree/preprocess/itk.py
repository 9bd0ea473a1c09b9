"""Affine ITK transforms as matrices, for vectorised point mapping and displacement checks.

Every preprocessing step works on SimpleITK images in physical (LPS) space, so that a registration transform
is an ordinary ITK transform that other tools (ANTs, 3D Slicer, ITK-SNAP) read as it is; conversions to and
from :class:`~gdfree.types.Volume` are :func:`gdfree.io.images.to_sitk` / ``from_sitk``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["matrix_transform", "transform_matrix", "transform_points"]


def transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 LPS matrix of an affine-family ITK transform (rigid, affine, or a composite of them).

    Found by mapping the origin and the three unit points, then checked on a fifth point.

    Raises:
        ValueError: the transform is not affine (e.g. a B-spline or a displacement field).
    """
    probes = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    mapped = np.array([transform.TransformPoint(p.tolist()) for p in probes])
    matrix = np.eye(4)
    matrix[:3, 3] = mapped[0]
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T
    check = np.array([37.0, -53.0, 71.0])
    if not np.allclose(matrix[:3, :3] @ check + matrix[:3, 3], transform.TransformPoint(check.tolist()), atol=1e-4):
        raise ValueError(f"transform {transform.GetName()} is not affine; expected a rigid or affine transform")
    return matrix


def matrix_transform(matrix: np.ndarray) -> sitk.AffineTransform:
    """The ITK transform of a 4x4 LPS matrix (the inverse of :func:`transform_matrix`)."""
    import SimpleITK as sitk

    out = sitk.AffineTransform(3)
    out.SetMatrix(np.asarray(matrix)[:3, :3].ravel().tolist())
    out.SetTranslation(np.asarray(matrix)[:3, 3].tolist())
    return out


def transform_points(transform: sitk.Transform | np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 3) LPS points through an ITK transform or a 4x4 matrix (vectorised for affine transforms)."""
    matrix = transform if isinstance(transform, np.ndarray) else transform_matrix(transform)
    return points @ matrix[:3, :3].T + matrix[:3, 3]
