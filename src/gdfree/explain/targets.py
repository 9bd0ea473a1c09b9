"""Scalar targets of a segmentation network, the lesions to explain, and crops around them.

Attribution methods explain a scalar. For a segmentation network the scalar is the mean logit of one head
(``enhancing``) over a region: one lesion, a region of interest, or all lesions of a case. The mean (not
the sum) makes lesions of different sizes comparable in a cohort table; the two differ by the lesion's voxel
count only. Lesions are the connected components (the model's detection rule) of either the model's own
mask (``predicted``) or the case's reference label (``reference``, e.g. the synthetic truth).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gdfree.arrays import label_components
from gdfree.data.cases import ArrayCase
from gdfree.metrics.lesions import DetectionRule

__all__ = [
    "LESION_SOURCES",
    "ExplainedLesion",
    "RegionTarget",
    "crop_around",
    "find_lesions",
    "padded_crop",
    "region_logit",
    "to_tensor",
]

LESION_SOURCES = ("predicted", "reference", "lesion-mask")


class RegionTarget(nn.Module):
    """``model`` reduced to one number per sample: the mean logit of ``head`` over ``region``.

    Shapes: input (B, C, X, Y, Z); ``region`` (X, Y, Z) bool; output (B,).
    """

    def __init__(self, model: nn.Module, head: int, region: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.model, self.head = model, head
        weight = torch.as_tensor(np.asarray(region, dtype=np.float32))
        if float(weight.sum()) == 0:
            raise ValueError("RegionTarget: the region is empty")
        self.register_buffer("weight", weight / weight.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)[:, self.head]
        return (logits * self.weight).flatten(1).sum(dim=1)


def region_logit(logits: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Mean logit inside each of labels 1..n of one (X, Y, Z) logit map, shape (n,)."""
    from scipy import ndimage

    if n == 0:
        return np.zeros(0)
    return np.asarray(ndimage.mean(logits, labels, np.arange(1, n + 1)), dtype=np.float64)


@dataclass
class ExplainedLesion:
    """One lesion to explain: its id (1..n in the case's labelling), voxel count, centroid (voxels) and the
    model's mean enhancing probability inside it, and whether it is predicted active (over the threshold)
    and active in the reference (None without a reference)."""

    lesion_id: int
    voxels: int
    centroid: tuple[float, float, float]
    probability: float
    predicted_active: bool
    reference_active: bool | None


def find_lesions(
    case: ArrayCase,
    prob: np.ndarray,
    threshold: float,
    rule: DetectionRule,
    source: str = "predicted",
    reference: np.ndarray | None = None,
    lesion_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, list[ExplainedLesion]]:
    """Label the lesions to explain in one case.

    Args:
        case: the loaded case. prob: the head's (X, Y, Z) probabilities; threshold: the model's threshold.
        rule: connectivity and minimum volume. source: ``predicted`` (components of ``prob >= threshold``),
            ``reference`` (components of ``reference``) or ``lesion-mask`` (components of ``lesion_mask``,
            the case's all-lesion label: every known lesion, active or not).
        reference: the reference enhancing mask (fills ``reference_active``).
        lesion_mask: the all-lesion mask (``lesion-mask`` source).

    Raises:
        ValueError: unknown source, or a source whose mask is missing.
    """
    from scipy import ndimage

    if source not in LESION_SOURCES:
        raise ValueError(f"lesion source: expected one of {', '.join(LESION_SOURCES)}, got {source!r}")
    masks = {"predicted": (prob >= threshold) & case.brain, "reference": reference, "lesion-mask": lesion_mask}
    if masks[source] is None:
        label = "enhancing" if source == "reference" else "lesion"
        raise ValueError(f"{case.case_id}: no {label} mask to take the {source} lesions from")
    mask = np.asarray(masks[source], bool)
    labels, n = label_components(mask, case.spacing_mm, rule.connectivity, rule.min_volume_mm3)
    if n == 0:
        return labels, []
    ids = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones(labels.shape), labels, ids)
    mean = ndimage.mean(prob, labels, ids)
    centres = np.array(ndimage.center_of_mass(np.ones(labels.shape), labels, ids)).reshape(-1, 3)
    peak = ndimage.maximum(prob, labels, ids)
    ref_hit = ndimage.maximum(np.asarray(reference, float), labels, ids) if reference is not None else None
    rows = []
    for k, (i, s, c, m, p) in enumerate(zip(ids, sizes, centres, mean, peak, strict=True)):
        centroid = (round(float(c[0]), 2), round(float(c[1]), 2), round(float(c[2]), 2))
        active = None if ref_hit is None else bool(ref_hit[k] > 0)
        rows.append(ExplainedLesion(int(i), int(s), centroid, float(m), bool(p >= threshold), active))
    return labels, rows


def crop_around(mask: np.ndarray, size: int, divisor: int) -> tuple[slice, ...]:
    """A cube of ``size`` voxels (rounded up to a multiple of ``divisor``, grown to hold the whole lesion)
    centred on ``mask``'s bounding box and shifted to stay inside the volume where it can."""
    where = np.nonzero(mask)
    if not where[0].size:
        raise ValueError("crop_around: empty mask")
    out = []
    for axis, n in enumerate(mask.shape):
        lo, hi = int(where[axis].min()), int(where[axis].max()) + 1
        side = max(size, hi - lo)
        side = int(math.ceil(side / divisor) * divisor)
        start = (lo + hi) // 2 - side // 2
        start = max(0, min(start, n - side)) if side <= n else 0
        out.append(slice(start, start + side))
    return tuple(out)


def padded_crop(image: np.ndarray, box: Sequence[slice]) -> np.ndarray:
    """``image[..., box]`` for a (C, X, Y, Z) array, zero-padded where ``box`` runs past the volume."""
    shape = [b.stop - b.start for b in box]
    out = np.zeros((image.shape[0], *shape), np.float32)
    src = tuple(slice(b.start, min(b.stop, n)) for b, n in zip(box, image.shape[1:], strict=True))
    dst = tuple(slice(0, s.stop - s.start) for s in src)
    out[(slice(None), *dst)] = image[(slice(None), *src)]
    return out


def to_tensor(image: np.ndarray, device: Any = "cpu") -> torch.Tensor:
    """(C, X, Y, Z) float array -> (1, C, X, Y, Z) tensor."""
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
