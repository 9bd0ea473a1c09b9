"""Enhancing-lesion labels derived from registered pre- and post-Gd T1w, each component judged, with QC pictures.

Both images are divided by their normal-appearing white-matter (NAWM) mode, the pre-contrast image is
subtracted from the post-contrast one, and a voxel enhances when the subtraction exceeds its NAWM median by
``k`` robust spreads (1.4826 x MAD over NAWM) and a fraction of its component's peak. Candidates are searched
inside the (dilated) lesion mask, or inside the brain when no lesion mask exists or ``region: brain`` is asked
for (then vessels, dura and choroid plexus enhance too); components of ``min_volume_mm3`` or less are dropped.

Veins, the choroid plexus and misregistration also enhance inside or next to lesions, so each candidate is then
judged (``reject: true``) by rules a radiologist applies when looking at it:

- **continues outside**: most of the face-connected structure it belongs to (voxels above
  ``continuation_level`` x its peak, within 15 mm) lies well outside the lesion region (more than 2 mm or 1.5
  voxels past it, beyond an enhancing edge's partial-volume spill): a vessel entering a lesion keeps going;
- **tubular**: median Frangi vesselness (scikit-image, bright ridges of the subtraction at 0.7-1.5 mm) on its
  core (the voxels deepest inside it; a round nodule's rim is locally tube-like) above ``max_vesselness``, for
  a component at least ``tube_min_elongation`` long (a ring-enhancing lesion is a curved tube but not long);
- **elongated**: the square root of the ratio of the two largest principal moments of its voxels (mm) above
  ``max_elongation`` (components of at least ``shape_min_voxels``); these two shape rules decide only on grids of
  ``shape_max_spacing_mm`` or finer (derive labels on the acquired ~1 mm grid);
- **edge**: less than ``min_lesion_overlap`` of its voxels inside the undilated lesion mask (a vessel along the
  lesion's border);
- **CSF-like**: its median FLAIR below ``min_flair`` x NAWM (ventricle, choroid plexus; without FLAIR: its
  pre-Gd T1w below ``min_t1`` x NAWM);
- **misregistration**: a shell of 2 mm around it holds more than ``max_negative_lobe`` x its volume of voxels that
  darken by ``k`` spreads (the paired bright/dark lobes of a shift); the best local shift of post against pre
  (+-1 voxel, normalised cross-correlation in a box around it) is reported too.

Each component gets a verdict, the rule that decided it and a confidence: the distance of its nearest rule
value from that rule's threshold, in units of the threshold, squashed to 0-1 (0.5 = on a boundary). It is a
margin, not a calibrated probability. A rater's decisions (:func:`gdfree.preprocess.review.apply_review`)
override the rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import (
    LESION_CONNECTIVITY,
    as_spacing,
    bounding_box,
    connectivity_structure,
    label_components,
    nawm_mask,
    robust_stats,
)
from gdfree.preprocess.intensity import normalise_intensity

__all__ = [
    "COMPONENT_COLUMNS", "EnhancingConfig", "EnhancingResult", "derive_enhancing",
]  # fmt: skip

COMPONENT_COLUMNS = (
    "component", "verdict", "reason", "confidence", "volume_mm3", "x_mm", "y_mm", "z_mm", "i", "j", "k",
    "outside_fraction", "vesselness", "elongation", "lesion_overlap", "flair", "t1", "negative_lobe",
    "local_shift_vox", "local_ncc", "peak",
)  # fmt: skip


@dataclass(frozen=True)
class EnhancingConfig:
    """Knobs of :func:`derive_enhancing` (saved with every derived mask).

    Attributes:
        k: threshold in robust spreads of the subtraction over NAWM.
        region: ``lesion`` (inside the lesion mask dilated by ``dilate_mm``) or ``brain``.
        dilate_mm: dilation of the lesion mask (enhancing rims can lie just outside a FLAIR lesion mask).
        min_volume_mm3: components of this volume or less are dropped.
        connectivity: 6, 18 or 26 for the components (default: the lesion rule of
            :data:`gdfree.metrics.lesions.LESION_CONNECTIVITY`, so ``prepare`` and ``evaluate`` count alike).
        peak_fraction: within each component keep the voxels at or above this fraction of its peak
            subtraction (its 90th percentile; 0 keeps all): a voxel at least half filled by enhancing tissue
            gives at least half the signal of a full one, so 0.5 removes the partial-volume rim that a noise
            threshold keeps.
        reject: judge each component by the rules of the module docstring (False keeps every candidate).
        max_outside_fraction, continuation_level, max_vesselness, tube_min_elongation, max_elongation,
        shape_min_voxels, min_lesion_overlap, min_flair, min_t1, max_negative_lobe: the rules' thresholds.
        shape_max_spacing_mm: the tubular and elongated rules decide only on grids this fine (a vein is 1-2 mm
            wide: on 2 mm voxels every small component is a few voxels of any shape); coarser, they are reported.
    """

    k: float = 3.0
    region: str = "lesion"
    dilate_mm: float = 1.0
    min_volume_mm3: float = 10.0
    connectivity: int = LESION_CONNECTIVITY
    peak_fraction: float = 0.5
    reject: bool = True
    max_outside_fraction: float = 0.5
    continuation_level: float = 0.75
    max_vesselness: float = 0.35
    max_elongation: float = 4.5
    shape_min_voxels: int = 6
    tube_min_elongation: float = 3.0
    shape_max_spacing_mm: float = 1.5
    min_lesion_overlap: float = 0.5
    min_flair: float = 1.0
    min_t1: float = 0.5
    max_negative_lobe: float = 0.6

    def __post_init__(self) -> None:
        if self.region not in ("lesion", "brain"):
            raise ValueError(f"region: expected lesion or brain, got {self.region!r}")
        if self.k <= 0 or self.dilate_mm < 0 or self.min_volume_mm3 < 0:
            raise ValueError("k must be > 0, dilate_mm and min_volume_mm3 >= 0")
        if min(self.max_outside_fraction, self.max_vesselness, self.max_elongation, self.min_lesion_overlap,
               self.min_flair, self.min_t1, self.max_negative_lobe) <= 0:  # fmt: skip
            raise ValueError("the rejection thresholds must be > 0")


@dataclass(eq=False)
class EnhancingResult:
    """What :func:`derive_enhancing` found.

    Attributes:
        mask: bool, the kept components.
        diff: float32 subtraction post - pre in NAWM-mode units (0 outside the brain).
        candidates: int32 labels 1..n of every candidate component (kept or rejected), numbered as ``components``.
        components: one row per candidate (:data:`COMPONENT_COLUMNS`), the verdict ``kept`` or ``rejected``.
        info: threshold, spread, region, counts, volumes, config (JSON-ready).
    """

    mask: np.ndarray
    diff: np.ndarray
    candidates: np.ndarray
    components: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def derive_enhancing(
    pre: np.ndarray,
    post: np.ndarray,
    brain: np.ndarray,
    spacing_mm: Sequence[float],
    lesion: np.ndarray | None = None,
    config: EnhancingConfig | None = None,
    *,
    flair: np.ndarray | None = None,
    affine: np.ndarray | None = None,
) -> EnhancingResult:
    """Enhancing components from pre/post-Gd T1w on one grid, each judged (see the module docstring).

    ``flair`` (same grid) sharpens the CSF rule; ``affine`` gives the components' centroids in mm (else voxel
    index x spacing).

    Raises:
        ValueError: shapes differ or the brain mask is empty.
    """
    cfg = config or EnhancingConfig()
    others = [a for a in (lesion, flair) if a is not None]
    if not (pre.shape == post.shape == brain.shape) or any(a.shape != pre.shape for a in others):
        raise ValueError(f"derive_enhancing: images and masks must share a grid, got {pre.shape}, {post.shape}, "
                         f"{brain.shape}{''.join(', ' + str(a.shape) for a in others)}")  # fmt: skip
    brain = brain.astype(bool)
    lesion = None if lesion is None else lesion.astype(bool)
    pre_n, pre_info = normalise_intensity(pre, brain, "nawm", lesion)
    post_n, post_info = normalise_intensity(post, brain, "nawm", lesion)
    flair_n = None if flair is None else normalise_intensity(flair, brain, "nawm", lesion)[0]
    diff = np.where(brain, post_n - pre_n, 0.0).astype(np.float32)
    nawm = nawm_mask(brain, lesion)
    values = diff[nawm] if nawm.sum() > 100 else diff[brain]
    centre, spread = robust_stats(values)
    threshold = centre + cfg.k * spread
    region_name = cfg.region if (cfg.region == "brain" or (lesion is not None and lesion.any())) else "brain"
    if region_name == "lesion":
        assert lesion is not None
        distance = ndimage.distance_transform_edt(~lesion, sampling=spacing_mm)
        region = (distance <= cfg.dilate_mm) & brain
        # "outside" for the continuation rule: past the partial-volume spill of an enhancing lesion's edge
        far = distance > cfg.dilate_mm + max(2.0, 1.5 * max(spacing_mm))
    else:
        region, far = brain, np.zeros_like(brain)
    labels, n = label_components((diff > threshold) & region, spacing_mm, cfg.connectivity, cfg.min_volume_mm3)
    if cfg.peak_fraction > 0 and n:
        # the 90th percentile, not the maximum: a vessel crossing the lesion must not raise the cut
        peaks = ndimage.labeled_comprehension(diff, labels, np.arange(1, n + 1), lambda v: np.percentile(v, 90),
                                              np.float64, 0.0)  # fmt: skip
        cut = np.concatenate([[np.inf], np.maximum(np.asarray(peaks) * cfg.peak_fraction, threshold)])
        labels, n = label_components((labels > 0) & (diff >= cut[labels]), spacing_mm, cfg.connectivity,
                                  cfg.min_volume_mm3)  # fmt: skip
    ctx = _Context(diff, pre_n, flair_n, brain, lesion if region_name == "lesion" else None, far,
                   (diff < centre - cfg.k * spread) & brain, spread, threshold,
                   as_spacing(spacing_mm), affine, post_n)  # fmt: skip
    components = [_judge(ctx, labels, c, cfg) for c in range(1, n + 1)]
    keep = np.zeros(n + 1, bool)
    keep[1:] = [row["verdict"] == "kept" for row in components]
    mask = keep[labels]
    voxel_mm3 = float(np.prod(spacing_mm))
    volumes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_mm3
    info = {
        "threshold": threshold, "nawm_median": centre, "nawm_spread": spread, "region": region_name,
        "n_candidates": int(n), "n_components": int(keep.sum()), "n_rejected": int(n - keep.sum()),
        "volumes_mm3": [round(float(v), 2) for v, k in zip(volumes, keep[1:], strict=True) if k],
        "pre_nawm_mode": pre_info["nawm_mode"], "post_nawm_mode": post_info["nawm_mode"],
        "flair": flair is not None, "config": asdict(cfg),
    }  # fmt: skip
    if cfg.region == "lesion" and region_name == "brain":
        info["note"] = "no lesion mask: candidates were searched in the whole brain (vessels and dura enhance too)"
    return EnhancingResult(mask, diff, labels.astype(np.int32), components, info)


@dataclass(frozen=True, eq=False)
class _Context:
    diff: np.ndarray
    pre: np.ndarray
    flair: np.ndarray | None
    brain: np.ndarray
    lesion: np.ndarray | None
    far: np.ndarray  # well outside the search region
    dark: np.ndarray  # darkening by k spreads
    spread: float
    threshold: float
    spacing: tuple[float, float, float]
    affine: np.ndarray | None
    post: np.ndarray


def _judge(ctx: _Context, labels: np.ndarray, c: int, cfg: EnhancingConfig) -> dict[str, Any]:
    """One candidate's rule values, verdict, deciding rule and confidence."""
    from skimage.filters import frangi

    spacing = np.asarray(ctx.spacing)
    pad = np.ceil(6.0 / spacing).astype(int)
    mask = labels == c
    where = np.argwhere(mask)
    box = bounding_box(mask, pad)
    assert box is not None  # c is a label of ``labels``
    comp = labels[box] == c
    n_vox = int(comp.sum())
    centroid = where.mean(axis=0)
    mm = (ctx.affine @ np.append(centroid, 1.0))[:3] if ctx.affine is not None else centroid * spacing
    peak = float(np.percentile(ctx.diff[box][comp], 90))
    # continues outside: the structure it belongs to, within 15 mm, at 3/4 of its own peak and face-connected, so
    # that noise and a brighter neighbour's partial-volume rim (choroid plexus) do not chain it to the brain
    near = bounding_box(mask, np.ceil(15.0 / spacing).astype(int))
    assert near is not None
    level = max(ctx.threshold, cfg.continuation_level * peak)
    pieces, _ = ndimage.label((ctx.diff[near] >= level) & ctx.brain[near], connectivity_structure(LESION_CONNECTIVITY))
    inside = labels[near] == c
    ids = np.unique(pieces[inside])
    whole = np.isin(pieces, ids[ids > 0]) | inside
    outside = float((whole & ctx.far[near]).sum() / whole.sum())
    # tubular: Frangi vesselness of the bright subtraction, in spread units, fixed structure scale
    sub = np.clip(ctx.diff[box] / ctx.spread, 0, None).astype(np.float64)
    sigmas = sorted({max(0.5, s / float(spacing.mean())) for s in (0.7, 1.0, 1.5)})
    vessel = frangi(sub, sigmas=sigmas, black_ridges=False, gamma=0.5 * cfg.k)
    # read on its core (the voxels deepest inside it): the rim of a round nodule is locally tube-like
    depth = ndimage.distance_transform_edt(comp, sampling=spacing)
    core = comp & (depth >= depth.max() - 0.5 * float(spacing.min()))
    vesselness = float(np.median(vessel[core]))
    # elongation: principal moments of the voxel coordinates in mm
    elongation = _elongation(where, spacing) if n_vox >= cfg.shape_min_voxels else float("nan")
    overlap = float(ctx.lesion[box][comp].mean()) if ctx.lesion is not None else float("nan")
    flair = float(np.median(ctx.flair[box][comp])) if ctx.flair is not None else float("nan")
    t1 = float(np.median(ctx.pre[box][comp]))
    shell = ndimage.binary_dilation(comp, connectivity_structure(LESION_CONNECTIVITY),
                                    iterations=max(1, round(2.0 / float(spacing.mean())))) & ~comp  # fmt: skip
    negative = float((ctx.dark[box] & shell).sum() / n_vox)
    shift, ncc = _local_shift(ctx.pre[box], ctx.post[box], ctx.brain[box] & ~ndimage.binary_dilation(comp))
    # each rule: (name, value, threshold, +1 if the value must stay below, -1 if above, reason)
    rules = [
        ("continues outside", outside, cfg.max_outside_fraction, 1,
         f"{outside:.0%} of its enhancing structure lies outside the lesion region (a vessel keeps going)"),
        ("tubular", vesselness if elongation >= cfg.tube_min_elongation else float("nan"), cfg.max_vesselness, 1,
         f"median Frangi vesselness {vesselness:.2f}, elongation {elongation:.1f}"),
        ("elongated", elongation, cfg.max_elongation, 1, f"elongation {elongation:.1f}"),
        ("edge", overlap, cfg.min_lesion_overlap, -1, f"{overlap:.0%} of it inside the lesion mask (its border)"),
        ("CSF-like", flair if ctx.flair is not None else t1, cfg.min_flair if ctx.flair is not None else cfg.min_t1,
         -1, (f"FLAIR {flair:.2f}" if ctx.flair is not None else f"pre-Gd T1w {t1:.2f}")
         + " x NAWM (ventricle / choroid plexus)"),
        ("misregistration", negative, cfg.max_negative_lobe, 1,
         f"{negative:.1f} x its volume darkens around it (shift {shift} voxel)"),
    ]  # fmt: skip
    coarse = float(spacing.max()) > cfg.shape_max_spacing_mm
    margins = [(sign * (thr - value) / thr, name, why) for name, value, thr, sign, why in rules
               if not math.isnan(value) and not (coarse and name in ("tubular", "elongated"))]  # fmt: skip
    worst = min(margins) if margins else (1.0, "", "")
    rejected = cfg.reject and worst[0] < 0
    confidence = 1.0 / (1.0 + math.exp(-4.0 * worst[0]))
    if rejected:
        confidence = 1.0 - confidence
        reason = f"{worst[1]}: {worst[2]}"
    else:
        reason = f"kept; nearest rule {worst[1]}: {worst[2]}" if worst[1] else "kept"
    ijk = np.round(centroid).astype(int)
    return {
        "component": c, "verdict": "rejected" if rejected else "kept", "reason": reason,
        "confidence": round(confidence, 3), "volume_mm3": round(n_vox * float(np.prod(spacing)), 2),
        "x_mm": round(float(mm[0]), 2), "y_mm": round(float(mm[1]), 2), "z_mm": round(float(mm[2]), 2),
        "i": int(ijk[0]), "j": int(ijk[1]), "k": int(ijk[2]),
        "outside_fraction": round(outside, 3), "vesselness": round(vesselness, 3),
        "elongation": None if math.isnan(elongation) else round(elongation, 2),
        "lesion_overlap": None if math.isnan(overlap) else round(overlap, 3),
        "flair": None if math.isnan(flair) else round(flair, 3), "t1": round(t1, 3),
        "negative_lobe": round(negative, 3), "local_shift_vox": shift, "local_ncc": round(ncc, 4),
        "peak": round(peak / ctx.spread, 2),
    }  # fmt: skip


def _elongation(where: np.ndarray, spacing: np.ndarray) -> float:
    """sqrt of the ratio of the two largest principal moments of the voxel coordinates ``where`` in mm (each
    voxel a uniform cube: + spacing^2 / 12)."""
    eig = np.sort(np.linalg.eigvalsh(np.cov((where * spacing).T) + np.eye(3) * (spacing**2).mean() / 12))[::-1]
    return float(math.sqrt(eig[0] / max(eig[1], 1e-9)))


def _local_shift(pre: np.ndarray, post: np.ndarray, where: np.ndarray) -> tuple[str, float]:
    """The integer shift (+-1 voxel per axis) of ``post`` that best matches ``pre`` over ``where`` (normalised
    cross-correlation), as "dx,dy,dz", and the correlation at no shift."""
    core = tuple(slice(1, n - 1) for n in pre.shape)
    a = pre[core][where[core]]
    if a.size < 20 or a.std() == 0:
        return "0,0,0", float("nan")
    a = (a - a.mean()) / a.std()
    best, best_ncc, zero = (0, 0, 0), -2.0, float("nan")
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                moved = np.roll(post, (dx, dy, dz), axis=(0, 1, 2))[core][where[core]]
                sd = moved.std()
                ncc = float((a * (moved - moved.mean())).mean() / sd) if sd > 0 else -1.0
                if (dx, dy, dz) == (0, 0, 0):
                    zero = ncc
                if ncc > best_ncc + 1e-6:
                    best, best_ncc = (dx, dy, dz), ncc
    if best_ncc - zero < 0.01:  # not clearly better: no shift
        best = (0, 0, 0)
    return ",".join(str(v) for v in best), zero
