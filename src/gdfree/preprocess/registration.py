"""Rigid then affine registration with SimpleITK (Mattes mutual information, multi-resolution), resampling,
ITK transform files, and the displacement between two transforms.

Convention (ITK's): a transform returned by :func:`register` maps points of the *fixed* image's physical
space to the *moving* image's, so ``resample(moving, fixed, transform)`` puts the moving image on the fixed
grid; the same ``.tfm`` file works in ANTs, 3D Slicer and ITK-SNAP. Its inverse maps predictions made on the
fixed grid back to the moving image (:func:`resample` with ``inverse=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gdfree.io.images import atomic_path
from gdfree.preprocess.itk import transform_matrix, transform_points

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = [
    "RegistrationConfig", "mean_displacement", "move_image", "read_transform", "register", "resample",
    "rigid_matrix", "write_transform",
]  # fmt: skip

STAGES = ("rigid", "affine")


@dataclass(frozen=True)
class RegistrationConfig:
    """Knobs of :func:`register`.

    Attributes:
        stages: ``rigid``, ``affine`` or both in that order (the affine stage starts from the rigid result).
        bins: Mattes mutual-information histogram bins.
        sampling: fraction of fixed-image voxels sampled at random per iteration (seeded); one value, or one
            per resolution level (the full-resolution level holds most voxels, so a smaller share there saves
            most of the time).
        shrink, smooth_mm: per resolution level, the shrink factor and the Gaussian sigma in mm.
        iterations, step_mm: regular-step gradient descent: iterations per level and the first step (the
            largest physical shift of a voxel in one step, mm; shrunk by 0.8 each time the direction turns).
        init: ``moments`` (centres of mass) or ``geometry`` (image centres) for the first stage.
        seed: the sampling seed; a registration is deterministic for a seed and thread count.
    """

    stages: tuple[str, ...] = STAGES
    bins: int = 32
    sampling: float | tuple[float, ...] = 0.1
    shrink: tuple[int, ...] = (4, 2, 1)
    smooth_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    iterations: int = 300
    step_mm: float = 2.0
    init: str = "moments"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.stages or any(s not in STAGES for s in self.stages):
            raise ValueError(f"stages: expected some of {STAGES}, got {self.stages}")
        if len(self.shrink) != len(self.smooth_mm) or not self.shrink:
            raise ValueError(f"shrink {self.shrink} and smooth_mm {self.smooth_mm}: expected one value per level")
        shares = self.sampling if isinstance(self.sampling, tuple) else (self.sampling,)
        if not all(0 < f <= 1 for f in shares) or (
            isinstance(self.sampling, tuple) and len(shares) != len(self.shrink)
        ):
            raise ValueError(f"sampling: expected a fraction in (0, 1], or one per level of shrink {self.shrink}, "
                             f"got {self.sampling}")  # fmt: skip
        if self.init not in ("moments", "geometry"):
            raise ValueError(f"init: expected moments or geometry, got {self.init!r}")


def _method(cfg: RegistrationConfig, fixed_mask: sitk.Image | None) -> sitk.ImageRegistrationMethod:
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg.bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # SimpleITK reads seed 0 as sitkWallClock (a new seed every run): shift by one so that every seed,
    # the default 0 included, is a fixed one
    if isinstance(cfg.sampling, tuple):
        reg.SetMetricSamplingPercentagePerLevel(list(cfg.sampling), cfg.seed + 1)
    else:
        reg.SetMetricSamplingPercentage(cfg.sampling, cfg.seed + 1)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=cfg.step_mm, minStep=1e-4, numberOfIterations=cfg.iterations, relaxationFactor=0.8,
    )  # fmt: skip
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(cfg.shrink))
    reg.SetSmoothingSigmasPerLevel(list(cfg.smooth_mm))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def register(
    fixed: sitk.Image,
    moving: sitk.Image,
    config: RegistrationConfig | None = None,
    *,
    fixed_mask: sitk.Image | None = None,
    initial: sitk.Transform | None = None,
) -> sitk.Transform:
    """Register ``moving`` onto ``fixed``: rigid (Euler) then affine, each multi-resolution.

    Args:
        fixed, moving: images in physical space (any pixel type; used as float32).
        fixed_mask: restricts the metric to these fixed voxels (e.g. the head), optional.
        initial: a starting transform instead of the moments/geometry initialiser.

    Returns:
        An AffineTransform (or Euler3DTransform for ``stages=("rigid",)``) from fixed to moving points.

    Raises:
        RuntimeError: SimpleITK's optimiser failed (e.g. the images do not overlap); the message says which stage.
    """
    import SimpleITK as sitk

    cfg = config or RegistrationConfig()
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    if initial is None:
        mode = (sitk.CenteredTransformInitializerFilter.MOMENTS if cfg.init == "moments"
                else sitk.CenteredTransformInitializerFilter.GEOMETRY)  # fmt: skip
        current: sitk.Transform = sitk.CenteredTransformInitializer(fixed_f, moving_f, sitk.Euler3DTransform(), mode)
    else:
        current = initial
    for stage in cfg.stages:
        transform: sitk.Transform
        if stage == "rigid":
            transform = sitk.Euler3DTransform()
            matrix = transform_matrix(current)
            transform.SetCenter(_centre(fixed_f))
            transform.SetMatrix(_nearest_rotation(matrix[:3, :3]).ravel().tolist())
            transform.SetTranslation(_translation_for(matrix, np.asarray(transform.GetCenter())).tolist())
        else:
            transform = sitk.AffineTransform(3)
            matrix = transform_matrix(current)
            transform.SetCenter(_centre(fixed_f))
            transform.SetMatrix(matrix[:3, :3].ravel().tolist())
            transform.SetTranslation(_translation_for(matrix, np.asarray(transform.GetCenter())).tolist())
        reg = _method(cfg, fixed_mask)
        reg.SetInitialTransform(transform, inPlace=True)
        try:
            reg.Execute(fixed_f, moving_f)
        except RuntimeError as exc:
            raise RuntimeError(f"{stage} registration failed: {exc}") from exc
        current = transform
    return current


def _centre(image: sitk.Image) -> list[float]:
    size = np.asarray(image.GetSize(), dtype=float)
    return list(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def _translation_for(matrix: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """ITK's translation t for y = A (x - c) + c + t equal to matrix @ x at every x."""
    return matrix[:3, :3] @ centre + matrix[:3, 3] - centre


def resample(
    moving: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    *,
    interpolation: str = "bspline",
    inverse: bool = False,
    default: float = 0.0,
) -> sitk.Image:
    """``moving`` on ``reference``'s grid through ``transform`` (reference -> moving points).

    Args:
        interpolation: ``bspline`` (images; clamped to the input's range so no negative ringing appears),
            ``linear``, or ``nearest`` (masks and label maps).
        inverse: use the inverse transform (e.g. to bring a prediction on the fixed grid back to the moving image).
    """
    import SimpleITK as sitk

    kinds = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in kinds:
        raise ValueError(f"interpolation: expected one of {', '.join(kinds)}, got {interpolation!r}")
    tfm = sitk.Transform(transform) if transform is not None else sitk.Transform()
    if inverse and transform is not None:
        tfm = tfm.GetInverse()
    out = sitk.Resample(moving, reference, tfm, kinds[interpolation], default, moving.GetPixelID())
    if interpolation == "bspline":
        stats = sitk.MinimumMaximumImageFilter()
        stats.Execute(moving)
        out = sitk.Clamp(out, lowerBound=stats.GetMinimum(), upperBound=stats.GetMaximum())
    return out


def write_transform(transform: sitk.Transform, path: Path | str) -> Path:
    """Write an ITK transform file (``.tfm`` / ``.txt``) atomically."""
    import SimpleITK as sitk

    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteTransform(transform, str(tmp))
    return path


def read_transform(path: Path | str) -> sitk.Transform:
    """Read an ITK transform file (Insight Transform File V1.0 text, ``.tfm``/``.txt``, or HDF5 ``.h5``).

    Raises:
        FileNotFoundError, ValueError: missing or unreadable file (named).
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: transform file not found")
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: not an ITK transform file ({exc})") from exc


def mean_displacement(
    a: sitk.Transform | np.ndarray, b: sitk.Transform | np.ndarray, reference: sitk.Image, mask: np.ndarray
) -> float:
    """Mean distance in mm between where two affine transforms send the voxel centres of ``reference`` that
    ``mask`` selects (``mask`` indexed (X, Y, Z) like :func:`~gdfree.io.images.from_sitk`'s arrays)."""
    idx = np.argwhere(mask).astype(np.float64)
    if not len(idx):
        raise ValueError("mean_displacement: the mask selects no voxel")
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    points = idx @ (direction @ np.diag(reference.GetSpacing())).T + np.asarray(reference.GetOrigin())
    return float(np.linalg.norm(transform_points(a, points) - transform_points(b, points), axis=1).mean())


def rigid_matrix(angles_deg: Sequence[float], translation_mm: Sequence[float], centre: Sequence[float]) -> np.ndarray:
    """4x4 rotation (x, then y, then z Euler angles in degrees) about ``centre``, then translation (LPS mm)."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    c = np.asarray(centre, dtype=float)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = c - rot @ c + np.asarray(translation_mm, dtype=float)
    return out


def move_image(image: sitk.Image, matrix: np.ndarray) -> sitk.Image:
    """The same voxels placed elsewhere: every voxel's physical point p goes to ``matrix`` @ p (no resampling).

    Used to misalign an image by a known rigid transform; registering the moved image back onto its old
    reference must then find ``matrix`` composed with the original alignment.
    """
    import SimpleITK as sitk

    moved = sitk.Image(image)
    rot = matrix[:3, :3]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    moved.SetDirection((rot @ direction).ravel().tolist())
    moved.SetOrigin((rot @ np.asarray(image.GetOrigin()) + matrix[:3, 3]).tolist())
    return moved
