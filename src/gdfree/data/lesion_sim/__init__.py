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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.data.lesion_sim.carvemix import carved_region, carvemix, fits_inside, sample_carvemix
from gdfree.data.lesion_sim.insertion import (
    LesionModel,
    fit_lesion_model,
    insert_lesion,
    library_shape,
    sample_insertion,
)
from gdfree.data.lesion_sim.removal import remove_lesion, sample_removal

__all__ = [
    "LesionModel", "LesionSimConfig", "carved_region", "carvemix", "fit_lesion_model", "fits_inside", "insert_lesion",
    "library_shape", "remove_lesion", "sample_carvemix", "sample_insertion", "sample_removal", "simulate",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# parametric insertion


# ---------------------------------------------------------------------------------------------------------
# removal


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
