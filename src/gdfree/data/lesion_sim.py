"""Lesion simulation on training cases: transplant (CarveMix), parametric insertion, and removal.

Three operations, each a sampler (JSON-ready parameters from a ``numpy.random.Generator``) and a
deterministic apply, so every simulated patch is reproduced from its logged parameters:

- :func:`sample_carvemix` / :func:`carvemix`: a real lesion with its surroundings from another case.
- :func:`fit_lesion_model`, :func:`sample_insertion` / :func:`insert_lesion`: a new lesion whose per-channel
  contrast to its surroundings is drawn from the target case's own lesions (chronic and, where the case has
  an enhancing label, active ones separately), with a real lesion shape from the phantom's library.
- :func:`sample_removal` / :func:`remove_lesion`: a lesion inpainted from its surroundings (harmonic fill of
  the lesion and a one-voxel rim, plus noise of the surroundings' spread), its labels cleared: a negative.

:func:`simulate` draws and applies one of them on a training patch (``lesion_sim:`` in the training YAML,
:class:`LesionSimConfig`).

CarveMix:

CarveMix (Zhang et al., MICCAI 2021) carves a lesion and a margin of the tissue around it out of one case
and pastes it into another, labels included. Here the carved region is every voxel within ``margin_mm`` of
one lesion (6-connected component, the lesion rule of :mod:`gdfree.metrics.lesions`); it is pasted at a
place where it lies wholly inside the target's brain; each channel is shifted so that the median of the
carved margin (the source's tissue around the lesion) equals the median of the tissue it replaces, so the
lesion keeps its contrast to its surroundings rather than the source's absolute level. Randomness is
:func:`sample_carvemix` (JSON-ready parameters from a ``numpy.random.Generator``) then the deterministic
:func:`carvemix`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import label_components

__all__ = [
    "LesionModel", "LesionSimConfig", "carved_region", "carvemix", "fit_lesion_model", "fits_inside", "insert_lesion",
    "library_shape", "remove_lesion", "sample_carvemix", "sample_insertion", "sample_removal", "simulate",
]  # fmt: skip


def carved_region(
    lesion_mask: np.ndarray, lesion_id: int, margin_mm: float, spacing_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The lesion ``lesion_id`` (1-based, components of ``lesion_mask``) and every voxel within ``margin_mm``
    of it; returns (region, lesion) bool masks."""
    labels, n = label_components(lesion_mask, spacing_mm)
    if not 1 <= lesion_id <= n:
        raise ValueError(f"lesion_id: the source has lesions 1..{n}, got {lesion_id}")
    lesion = labels == lesion_id
    distance = ndimage.distance_transform_edt(~lesion, sampling=spacing_mm)
    return distance <= margin_mm, lesion


def sample_carvemix(
    source_lesion: np.ndarray,
    target_brain: np.ndarray,
    spacing_mm: Sequence[float],
    rng: np.random.Generator,
    *,
    min_margin_mm: float = 1.0,
    max_margin_mm: float = 3.0,
    tries: int = 100,
) -> dict[str, Any]:
    """Draw which source lesion, how much margin (uniform in [``min_margin_mm``, ``max_margin_mm``]: at least
    one voxel of surroundings at 1 mm, so the contrast can be matched), and where in the target it goes.

    Raises:
        ValueError: the source has no lesion, or no place in the target brain holds the region.
    """
    n = label_components(source_lesion, spacing_mm)[1]
    if n == 0:
        raise ValueError("sample_carvemix: the source case has no lesion to carve")
    lesion_id = int(rng.integers(1, n + 1))
    margin = float(rng.uniform(min_margin_mm, max_margin_mm))
    region, _ = carved_region(source_lesion, lesion_id, margin, spacing_mm)
    points = np.argwhere(region)
    centre = np.round(points.mean(axis=0)).astype(int)
    candidates = np.argwhere(target_brain)
    for _ in range(tries):
        offset = candidates[rng.integers(len(candidates))] - centre
        if fits_inside(points + offset, target_brain):
            return {"lesion_id": lesion_id, "margin_mm": margin, "offset_vox": [int(o) for o in offset]}
    raise ValueError(f"sample_carvemix: no place in the target brain holds lesion {lesion_id} after {tries} tries")


def fits_inside(points: np.ndarray, brain: np.ndarray) -> bool:
    """Whether every (N, 3) voxel index lies inside the grid and inside ``brain``."""
    inside = np.all((points >= 0) & (points < np.array(brain.shape)), axis=1)
    return bool(inside.all() and brain[tuple(points.T)].all())


def carvemix(
    params: Mapping[str, Any],
    source_image: np.ndarray,
    source_labels: Mapping[str, np.ndarray],
    target_image: np.ndarray,
    target_labels: Mapping[str, np.ndarray],
    target_brain: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    lesion_key: str = "lesion",
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Paste the carved source region into the target; returns (image, labels, pasted region in the target).

    Args:
        params: from :func:`sample_carvemix`.
        source_image, target_image: (C, X, Y, Z), same channels and voxel size (grids may differ in shape).
        source_labels, target_labels: label name -> (X, Y, Z) bool; every target label is replaced inside the
            pasted region by the source's (a label the source lacks is cleared there).
        lesion_key: the label whose components are carved.

    Raises:
        ValueError: channels differ, or the region does not lie inside the target brain.
    """
    if source_image.shape[0] != target_image.shape[0]:
        raise ValueError(f"carvemix: {source_image.shape[0]} source channels, {target_image.shape[0]} in the target")
    region, lesion = carved_region(source_labels[lesion_key], int(params["lesion_id"]), float(params["margin_mm"]),
                                   spacing_mm)  # fmt: skip
    src = np.argwhere(region)
    dst = src + np.asarray(params["offset_vox"], int)
    if not fits_inside(dst, target_brain):
        raise ValueError("carvemix: the carved region does not lie inside the target brain at this offset")
    src_idx, dst_idx = tuple(src.T), tuple(dst.T)
    image = target_image.copy()
    margin = ~lesion[src_idx]  # the carved tissue around the lesion
    for c in range(image.shape[0]):
        values = source_image[c][src_idx]
        shift = 0.0
        if margin.any():
            shift = float(np.median(target_image[c][dst_idx][margin]) - np.median(values[margin]))
        image[c][dst_idx] = values + shift
    labels = {}
    for name, target in target_labels.items():
        out = np.asarray(target, bool).copy()
        source = source_labels.get(name)
        out[dst_idx] = np.asarray(source, bool)[src_idx] if source is not None else False
        labels[name] = out
    pasted = np.zeros(target_brain.shape, bool)
    pasted[dst_idx] = True
    return image, labels, pasted


# ---------------------------------------------------------------------------------------------------------
# parametric insertion


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


def _shell(mask: np.ndarray, spacing_mm: Sequence[float], inner_mm: float, outer_mm: float) -> np.ndarray:
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    return (distance > inner_mm) & (distance <= outer_mm)


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    points = np.argwhere(mask)
    lo = np.maximum(points.min(axis=0) - pad, 0)
    hi = np.minimum(points.max(axis=0) + pad + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


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
        shell = _shell(lesion, spacing_mm, 1.0, 3.0) & brain[box] & (labels[box] == 0)
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
    box = _bbox(mask, 1)
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
        out[(c, *box)] = out[(c, *box)] + np.where(local, change, 0.0).astype(np.float32)
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


# ---------------------------------------------------------------------------------------------------------
# removal


def sample_removal(lesion_mask: np.ndarray, spacing_mm: Sequence[float], rng: np.random.Generator) -> dict[str, Any]:
    """Draw which lesion (6-connected component of ``lesion_mask``, 1-based) to remove, and a noise seed.

    Raises:
        ValueError: no lesion.
    """
    n = label_components(lesion_mask, spacing_mm)[1]
    if n == 0:
        raise ValueError("sample_removal: no lesion to remove")
    return {"lesion_id": int(rng.integers(1, n + 1)), "noise_seed": int(rng.integers(2**31))}


def remove_lesion(
    params: Mapping[str, Any],
    image: np.ndarray,
    labels: Mapping[str, np.ndarray | None],
    brain: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    lesion_key: str = "lesion",
    iterations: int = 200,
) -> tuple[np.ndarray, dict[str, np.ndarray | None], np.ndarray]:
    """Inpaint lesion ``lesion_id`` and a one-voxel rim (its partial volume) from the brain tissue around it:
    a harmonic fill (Jacobi iterations with the surroundings fixed) plus noise of the surroundings' spread
    (1.4826 x their median absolute deviation: a sulcus beside the lesion does not inflate it).
    Every label is cleared in the filled region. Returns (image, labels, filled region).

    The surroundings are whatever tissue lies there (white matter for most lesions; grey matter or CSF
    for juxtacortical and periventricular ones), not a tissue model.
    """
    lesion_labels, n = label_components(np.asarray(labels[lesion_key], bool), spacing_mm)
    lesion_id = int(params["lesion_id"])
    if not 1 <= lesion_id <= n:
        raise ValueError(f"remove_lesion: lesions 1..{n}, got {lesion_id}")
    region = ndimage.binary_dilation(lesion_labels == lesion_id) & brain
    box = _bbox(region, 3)
    hole = region[box]
    known = brain[box] & ~hole & (lesion_labels[box] == 0)
    around = _shell(hole, spacing_mm, 0.0, 3.0) & known
    rng = np.random.default_rng(int(params["noise_seed"]))
    out = image.copy()
    for c in range(image.shape[0]):
        patch = out[(c, *box)].astype(np.float64)
        source = patch[around] if around.any() else patch[known] if known.any() else patch
        fill_value = float(np.median(source))
        work = np.where(hole, fill_value, patch)
        weights = known | hole
        for _ in range(iterations):  # Jacobi: each hole voxel becomes the mean of its known/hole neighbours
            num = ndimage.uniform_filter(np.where(weights, work, 0.0), 3, mode="constant")
            den = ndimage.uniform_filter(weights.astype(np.float64), 3, mode="constant")
            work = np.where(hole, num / np.maximum(den, 1e-9), patch)
        values = patch[around]
        sd = 1.4826 * float(np.median(np.abs(values - np.median(values)))) if values.size > 1 else 0.0  # robust
        work[hole] += sd * rng.standard_normal(int(hole.sum()))
        out[(c, *box)] = work.astype(np.float32)
    filled = np.zeros(brain.shape, bool)
    filled[box] = hole
    new_labels = {name: None if lab is None else np.asarray(lab, bool) & ~filled for name, lab in labels.items()}
    return out, new_labels, filled


# ---------------------------------------------------------------------------------------------------------
# one simulated change per training patch


@dataclass(frozen=True)
class LesionSimConfig:
    """Lesion simulation in training batches (a YAML mapping ``lesion_sim:``).

    Attributes:
        probability: share of training patches that get one simulated change (0 = off, the default).
        carvemix, insert, remove: relative weights of the three operations (an operation the patch cannot
            take, e.g. removal without a lesion, is left out of that draw).
        active_probability: chance that an inserted lesion is active, when the case has active lesions.
    """

    probability: float = 0.0
    carvemix: float = 1.0
    insert: float = 1.0
    remove: float = 0.5
    active_probability: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1 or not 0 <= self.active_probability <= 1:
            raise ValueError("lesion_sim.probability and active_probability: expected values in [0, 1]")
        weights = (self.carvemix, self.insert, self.remove)
        if min(weights) < 0 or (self.probability > 0 and sum(weights) <= 0):
            raise ValueError(f"lesion_sim: carvemix, insert, remove: expected weights >= 0, sum > 0; got {weights}")


def simulate(
    cfg: LesionSimConfig,
    rng: np.random.Generator,
    image: np.ndarray,
    labels: Mapping[str, np.ndarray | None],
    brain: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    model: LesionModel | None = None,
    donor: tuple[np.ndarray, Mapping[str, np.ndarray | None]] | None = None,
    placement: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray | None], dict[str, Any] | None]:
    """With probability ``cfg.probability``, one lesion operation on a (C, X, Y, Z) patch; returns (image,
    labels, record) with record = ``{"op": ..., "params": ...}`` (None when nothing was done).

    ``model``: the patch's case's :class:`LesionModel` (insertion; None leaves insertion out); ``donor``: image
    and labels of a patch of another case (CarveMix); ``placement``: where new lesions may go (e.g. white
    matter; default the brain), always away from existing lesions. Operations that cannot be done here are
    left out; a draw that finds no place for its lesion does nothing.
    """
    labels = dict(labels)
    if cfg.probability <= 0 or rng.random() >= cfg.probability:
        return image, labels, None
    lesion = labels.get("lesion")
    has_lesion = lesion is not None and bool(np.asarray(lesion).any())
    placement = (brain if placement is None else placement & brain).copy()
    if lesion is not None:
        placement &= ~ndimage.binary_dilation(np.asarray(lesion, bool), iterations=2)
    options = []
    if donor is not None and donor[1].get("lesion") is not None and np.asarray(donor[1]["lesion"]).any():
        options.append(("carvemix", cfg.carvemix))
    if model is not None and (model.chronic.shape[0] or model.active.shape[0]) and lesion is not None:
        options.append(("insert", cfg.insert))
    if has_lesion:
        options.append(("remove", cfg.remove))
    options = [(name, w) for name, w in options if w > 0]
    if not options:
        return image, labels, None
    weights = np.array([w for _, w in options], float)
    op = options[int(rng.choice(len(options), p=weights / weights.sum()))][0]
    try:
        if op == "carvemix":
            assert donor is not None
            donor_image, donor_labels = donor
            params = sample_carvemix(np.asarray(donor_labels["lesion"], bool), placement, spacing_mm, rng, tries=20)
            present = {k: np.asarray(v, bool) for k, v in labels.items() if v is not None}
            source = {k: np.asarray(v, bool) for k, v in donor_labels.items() if v is not None}
            image, mixed, _ = carvemix(params, donor_image, source, image, present, placement, spacing_mm)
            labels.update(mixed)
        elif op == "insert":
            assert model is not None
            params = sample_insertion(model, placement, spacing_mm, rng, active_probability=cfg.active_probability,
                                      tries=20)  # fmt: skip
            image, labels, _ = insert_lesion(params, image, labels, spacing_mm, model.spread)
        else:
            params = sample_removal(np.asarray(lesion, bool), spacing_mm, rng)
            image, labels, _ = remove_lesion(params, image, labels, brain, spacing_mm)
    except ValueError:  # no place for this lesion in this patch
        return image, labels, None
    return image, labels, {"op": op, "params": params}
