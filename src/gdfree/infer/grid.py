"""A network runs at the voxel size it was trained at: the exam (its brain box, for a network whose output does not
depend on the field of view) resampled onto the model's grid, the network run there, and its outputs resampled
back onto the exam's own grid, where they are thresholded, as nnU-Net does.

The image goes to the model's grid trilinearly, with voxel *areas* aligned (``align_corners=False``: a voxel of
the exam covers the same millimetres as the model-grid voxels that replace it). The probabilities come back by
the nearest model-grid voxel (``nearest-exact``), not linearly: measured on a 1 mm copy of a 2 mm phantom exam
with the shipped 2 mm model (tests/infer/test_grid.py), linear interpolation followed by the model's threshold
(0.82 for lesions) shrank every lesion by half a model voxel per side and lost 8 of its 14 lesions (lesion
sensitivity 0.43, voxel Dice 0.62 against the 2 mm masks), while the nearest voxel keeps them all (Dice 1.0);
it also keeps the written masks equal to the written probabilities thresholded. Exams whose voxel size is
within :data:`SAME_SPACING` of the model's run as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from gdfree.arrays import bounding_box

__all__ = ["SAME_SPACING", "model_grid_shape", "on_model_grid", "resample_channels"]

SAME_SPACING = 0.02
"""Voxel sizes within 2% (per axis) of the model's are the model's: no resampling (a 1.0 mm model on a 0.98 mm
exam runs as it is)."""


def model_grid_shape(shape: Sequence[int], exam_mm: Sequence[float], model_mm: Sequence[float]) -> tuple[int, ...]:
    """The shape of ``shape`` voxels of ``exam_mm`` resampled to ``model_mm`` (each axis at least 1)."""
    return tuple(max(1, round(n * e / m)) for n, e, m in zip(shape, exam_mm, model_mm, strict=True))


def resample_channels(data: np.ndarray, shape: Sequence[int], mode: str = "trilinear") -> np.ndarray:
    """(C, X, Y, Z) ``data`` resampled to (C, *shape), float32: ``trilinear`` (voxel areas aligned) or
    ``nearest-exact`` (each output voxel takes the input voxel its centre falls in)."""
    tensor = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    size = tuple(int(s) for s in shape)
    if mode == "trilinear":
        out = F.interpolate(tensor, size=size, mode="trilinear", align_corners=False)
    elif mode == "nearest-exact":
        out = F.interpolate(tensor, size=size, mode="nearest-exact")
    else:
        raise ValueError(f"mode: expected trilinear or nearest-exact, got {mode!r}")
    return out[0].numpy()


def _same(exam_mm: Sequence[float], model_mm: Sequence[float]) -> bool:
    return all(abs(e - m) <= SAME_SPACING * m for e, m in zip(exam_mm, model_mm, strict=True))


def on_model_grid(
    run: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    image: np.ndarray,
    brain: np.ndarray | None,
    exam_mm: Sequence[float] | None,
    model_mm: Sequence[float] | None,
    margin: int = 4,
    crop: bool = True,
) -> np.ndarray:
    """``run(image, brain)`` -> (..., X, Y, Z) maps, done on the model's grid when the voxel sizes differ.

    ``image`` (C, X, Y, Z) is cut to ``brain``'s box (grown by ``margin`` exam voxels; the whole volume without a
    brain mask or with ``crop`` False, for a network whose output depends on its field of view), resampled to
    ``model_mm``, given to ``run`` with the brain mask resampled likewise (> 0.5), and the maps brought back
    into the box by the nearest voxel; outside it they are 0. Without either voxel size, or with equal ones,
    ``run`` gets the image as it is.
    """
    if exam_mm is None or model_mm is None or _same(exam_mm, model_mm):
        return run(image, brain)
    box = bounding_box(brain, margin) if brain is not None and crop else None
    box = box or tuple(slice(0, n) for n in image.shape[1:])
    inner = image[(slice(None), *box)]
    shape = model_grid_shape(inner.shape[1:], exam_mm, model_mm)
    small_brain = None
    if brain is not None:
        small_brain = resample_channels(np.asarray(brain, np.float32)[box][None], shape)[0] > 0.5
    maps = run(resample_channels(inner, shape), small_brain)
    lead = maps.shape[:-3]
    flat = maps.reshape(-1, *maps.shape[-3:])
    full = np.zeros((flat.shape[0], *image.shape[1:]), np.float32)
    for k in range(flat.shape[0]):  # one map at a time: a stack of samples is not copied whole at the exam's grid
        full[k][box] = resample_channels(flat[k : k + 1], inner.shape[1:], "nearest-exact")[0]
    return full.reshape(*lead, *image.shape[1:])
