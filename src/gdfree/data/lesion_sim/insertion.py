"""Parametric lesion insertion: a new lesion whose per-channel contrast to its surroundings is drawn from the
target case's own lesions (chronic and, where the case has an enhancing label, active ones separately), with a
real lesion shape from the phantom's library."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import bounding_box, distance_shell, label_components
from gdfree.data.lesion_sim.carvemix import fits_inside

__all__ = ["LesionModel", "fit_lesion_model", "insert_lesion", "library_shape", "sample_insertion"]


@dataclass(frozen=True)
class LesionModel:
    """Per-channel contrast of a case's lesions to their surroundings (image units; z-scored images: SDs).

    ``chronic`` / ``active``: (n_lesions, C) contrasts, lesion median minus the median of a 1-3 mm shell
    around it; ``spread``: (C,) median within-lesion SD. ``active`` is empty when the case has no enhancing
    label (or no enhancing lesion).
    """

    chronic: np.ndarray
    active: np.ndarray
    spread: np.ndarray


def fit_lesion_model(
    image: np.ndarray,
    lesion_mask: np.ndarray,
    brain: np.ndarray,
    spacing_mm: Sequence[float],
    enhancing: np.ndarray | None = None,
) -> LesionModel:
    """Measure the contrast of each lesion of one case (6-connected components of ``lesion_mask``) to the
    brain tissue 1-3 mm around it, per channel of (C, X, Y, Z) ``image``; a lesion touching ``enhancing`` is
    active.

    Raises:
        ValueError: the case has no lesion.
    """
    labels, n = label_components(lesion_mask, spacing_mm)
    if n == 0:
        raise ValueError("fit_lesion_model: the case has no lesion to fit")
    pad = int(np.ceil(3.0 / min(spacing_mm))) + 1
    rows: dict[bool, list[np.ndarray]] = {False: [], True: []}
    spreads = []
    for lesion_id, sl in enumerate(ndimage.find_objects(labels), start=1):
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in sl)
        lesion = labels[box] == lesion_id
        shell = distance_shell(lesion, spacing_mm, 1.0, 3.0) & brain[box] & (labels[box] == 0)
        if not shell.any():
            continue
        values = image[(slice(None), *box)]
        inside, around = values[:, lesion], values[:, shell]
        active = enhancing is not None and bool(enhancing[box][lesion].any())
        rows[active].append(np.median(inside, axis=1) - np.median(around, axis=1))
        if inside.shape[1] > 1:
            spreads.append(inside.std(axis=1))
    channels = image.shape[0]

    def stack(r: list[np.ndarray]) -> np.ndarray:
        return np.stack(r).astype(np.float32) if r else np.zeros((0, channels), np.float32)

    spread = np.median(np.stack(spreads), axis=0) if spreads else np.zeros(channels)
    return LesionModel(stack(rows[False]), stack(rows[True]), spread.astype(np.float32))


def library_shape(
    index: int, spacing_mm: Sequence[float], flips: Sequence[bool], transpose: Sequence[int]
) -> np.ndarray:
    """A library lesion (1 mm) resampled to ``spacing_mm`` by its fraction of each voxel, flipped/transposed."""
    from gdfree.phantom.lesions import lesion_library

    mask = lesion_library().masks[index].astype(np.float32)
    for axis, flip in enumerate(flips):
        if flip:
            mask = np.flip(mask, axis)
    mask = np.transpose(mask, transpose)
    zoom = [1.0 / s for s in spacing_mm]
    fraction = ndimage.zoom(mask, zoom, order=1, grid_mode=True, mode="grid-constant")
    return fraction >= 0.5


def sample_insertion(
    model: LesionModel,
    placement: np.ndarray,
    spacing_mm: Sequence[float],
    rng: np.random.Generator,
    *,
    active_probability: float = 0.5,
    max_voxels: int | None = None,
    tries: int = 50,
) -> dict[str, Any]:
    """Draw a new lesion for a case whose lesions ``model`` describes: a library shape (random flips and axis
    order), a place where it lies wholly inside ``placement`` (e.g. brain away from existing lesions), and a
    contrast per channel (one of the case's lesions' contrasts, jittered by 10 %). Active (and labelled
    enhancing) with ``active_probability`` when the case has active lesions to copy.

    Raises:
        ValueError: no lesion contrasts to draw from, or no place found.
    """
    from gdfree.phantom.lesions import lesion_library

    active = bool(model.active.shape[0] and rng.random() < active_probability)
    pool = model.active if active else model.chronic
    if not pool.shape[0]:
        pool, active = model.active, True
    if not pool.shape[0]:
        raise ValueError("sample_insertion: the lesion model has no lesion contrast to draw from")
    contrast = pool[rng.integers(pool.shape[0])] * float(np.exp(0.1 * rng.standard_normal()))
    candidates = np.argwhere(placement)
    if not candidates.size:
        raise ValueError("sample_insertion: nowhere to place a lesion")
    n_shapes = len(lesion_library())
    for _ in range(tries):
        index = int(rng.integers(n_shapes))
        flips = [bool(f) for f in rng.random(3) < 0.5]
        transpose = [int(t) for t in rng.permutation(3)]
        shape = library_shape(index, spacing_mm, flips, transpose)
        points = np.argwhere(shape)
        if not points.size or (max_voxels is not None and len(points) > max_voxels):
            continue
        centre = candidates[rng.integers(len(candidates))]
        offset = centre - np.round(points.mean(axis=0)).astype(int)
        if fits_inside(points + offset, placement):
            return {
                "library_index": index, "flips": flips, "transpose": transpose,
                "offset_vox": [int(o) for o in offset], "contrast": [round(float(c), 4) for c in contrast],
                "active": active, "texture_seed": int(rng.integers(2**31)),
            }  # fmt: skip
    raise ValueError(f"sample_insertion: no library lesion fits the placement region after {tries} tries")


def insert_lesion(
    params: Mapping[str, Any],
    image: np.ndarray,
    labels: Mapping[str, np.ndarray | None],
    spacing_mm: Sequence[float],
    spread: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray | None], np.ndarray]:
    """Add the lesion of ``params`` (from :func:`sample_insertion`); returns (image, labels, lesion mask).

    The image changes only inside the lesion mask: each channel gains ``contrast`` x a weight that rises from
    0.5 at the border to 1 one and a half mm inside (a soft edge without touching unlabelled voxels), plus
    smooth texture of ``spread`` (the case's within-lesion SD; none when None). ``lesion`` is set inside the
    mask, ``enhancing`` too when the lesion is active; a label that is None stays None.
    """
    shape = library_shape(int(params["library_index"]), spacing_mm, params["flips"], params["transpose"])
    points = np.argwhere(shape) + np.asarray(params["offset_vox"], int)
    grid = image.shape[1:]
    if not np.all((points >= 0) & (points < np.array(grid))):
        raise ValueError("insert_lesion: the lesion does not lie inside the image at this offset")
    mask = np.zeros(grid, bool)
    mask[tuple(points.T)] = True
    box = bounding_box(mask, 1)
    assert box is not None  # points inside the grid: the mask is not empty
    local = mask[box]
    depth = ndimage.distance_transform_edt(local, sampling=spacing_mm)
    weight = np.where(local, 0.5 + 0.5 * np.clip((depth - min(spacing_mm)) / 1.5, 0.0, 1.0), 0.0)
    out = image.copy()
    contrast = np.asarray(params["contrast"], np.float32)
    if spread is not None:
        rng = np.random.default_rng(int(params["texture_seed"]))
        texture = ndimage.gaussian_filter(rng.standard_normal(local.shape), 0.7)
        texture /= max(float(texture[local].std()), 1e-6) if local.sum() > 1 else 1.0
    for c in range(image.shape[0]):
        change = weight * contrast[c]
        if spread is not None:
            change = change + local * float(spread[c]) * texture
        out[c][box] = out[c][box] + np.where(local, change, 0.0).astype(np.float32)
    new_labels: dict[str, np.ndarray | None] = {}
    for name, label in labels.items():
        if label is None:
            new_labels[name] = None
            continue
        label = np.asarray(label, bool).copy()
        if name == "lesion" or (name == "enhancing" and params["active"]):
            label |= mask
        new_labels[name] = label
    return out, new_labels, mask
