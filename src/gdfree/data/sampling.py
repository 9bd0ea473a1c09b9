"""Patch sampling that oversamples active lesions, chronic lesions and background in set ratios.

Randomness follows the project rule: :meth:`PatchSampler.sample_params` draws every choice from an
explicit generator, :meth:`PatchSampler.crop` applies them deterministically, so a batch can be replayed
from its logged parameters.

Categories of patch centres, per case:
    ``active``: voxels of the ``enhancing`` label;
    ``chronic``: ``lesion`` voxels more than 2 voxels away from any enhancing voxel;
    ``background``: brain voxels.
With ``unit: voxel`` (default, as nnU-Net) a centre is a uniform voxel of the category in a uniform case
that has it, so a 200-voxel lesion is drawn 100 times as often as a 2-voxel one. With ``unit: lesion`` the
centre's lesion (a 26-connected component of the category's voxels) is drawn uniformly among all lesions
of that category in the training cases, then a voxel in it: every lesion is seen equally often, whatever
its size. Background centres are always uniform brain voxels of a uniform case.
A case lacking the label a category needs is not drawn for it; if no case has it, its share goes to
background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.arrays import label_components
from gdfree.data.cases import ArrayCase
from gdfree.data.lesion_sim import LesionModel, fit_lesion_model

__all__ = ["PatchParams", "PatchSampler", "SamplingRatios", "dataset_case_weights"]

CATEGORIES = ("active", "chronic", "background")
UNITS = ("voxel", "lesion")


@dataclass(frozen=True)
class SamplingRatios:
    """Shares of patch centres per category (normalised to sum 1).

    Chronic lesions get the largest share: telling active from chronic lesions is the task, and a model
    that saw too few chronic lesions calls every lesion active (seen on the 2 mm phantom at 0.4/0.3/0.3).
    """

    active: float = 0.35
    chronic: float = 0.45
    background: float = 0.2
    unit: str = "voxel"

    def __post_init__(self) -> None:
        values = (self.active, self.chronic, self.background)
        if min(values) < 0 or sum(values) <= 0:
            raise ValueError(f"sampling ratios: expected non-negative shares with a positive sum, got {values}")
        if self.unit not in UNITS:
            raise ValueError(f"sampling.unit: expected one of {', '.join(UNITS)}, got {self.unit!r}")


@dataclass(frozen=True)
class PatchParams:
    """Where one patch comes from: case index, category and the corner of the patch (voxels)."""

    case: int
    category: str
    corner: tuple[int, int, int]


class PatchSampler:
    """Draw (image, target, present) patches from in-memory cases.

    Args:
        cases: the training cases.
        heads: label heads in target channel order.
        patch_size: edge of the cubic patch in voxels.
        ratios: category shares and the sampling unit of lesion categories.
        case_weights: per case, its weight when a case is drawn (within each category, among the cases that
            have it; with unit ``lesion``, a case's weight is spread over its lesions); None: equal weights
            (:func:`dataset_case_weights` turns per-dataset shares into these).
    """

    def __init__(
        self, cases: Sequence[ArrayCase], heads: Sequence[str], patch_size: int, ratios: SamplingRatios,
        case_weights: Sequence[float] | None = None,
    ) -> None:  # fmt: skip
        if not cases:
            raise ValueError("no training case to sample from")
        if case_weights is not None and (len(case_weights) != len(cases) or min(case_weights) < 0):
            raise ValueError(f"case_weights: expected {len(cases)} non-negative weights, got {list(case_weights)}")
        self.weights = None if case_weights is None else np.asarray(case_weights, float)
        self.cases = list(cases)
        self.heads = tuple(heads)
        self.patch = int(patch_size)
        self.index: list[dict[str, np.ndarray]] = [self._centres(c) for c in self.cases]
        self._lesion_models: dict[int, LesionModel | None] = {}
        self._white_matter: dict[int, np.ndarray] = {}
        self.t1_channel: int | None = None  # set (prepare_lesion_simulation) to place new lesions in white matter
        self.prior_dropout: Any = None  # a gdfree.data.loader.PriorDropout, set by training for prior-exam channels
        self.pair_artefacts: Any = None  # a gdfree.data.pair_artefacts.PairArtefacts, likewise
        # unit "lesion": per category, one row (case, start, stop) per lesion; its voxels are
        # index[case][category][start:stop] (each case's voxels are regrouped lesion by lesion)
        self.lesions: dict[str, np.ndarray] = {}
        self._lesion_p: dict[str, np.ndarray | None] = {}  # with case weights: each lesion row's probability
        if ratios.unit == "lesion":
            for cat in CATEGORIES[:2]:
                rows = [self._group_by_lesion(i, cat) for i in range(len(self.cases))]
                self.lesions[cat] = np.concatenate([np.zeros((0, 3), np.int64), *rows])
                self._lesion_p[cat] = self._row_probabilities(self.lesions[cat])
        shares = np.array([ratios.active, ratios.chronic, ratios.background], float)
        for i, cat in enumerate(CATEGORIES[:2]):
            if not any(idx[cat].size for idx in self.index):
                shares[2] += shares[i]
                shares[i] = 0.0
        self.shares = shares / shares.sum()

    def _row_probabilities(self, rows: np.ndarray) -> np.ndarray | None:
        """Each lesion row's probability under the case weights (a case's weight spread over its lesions); None
        without weights or when no row has weight (then rows are equally likely)."""
        if self.weights is None or not len(rows):
            return None
        per_case = np.bincount(rows[:, 0], minlength=len(self.cases))[rows[:, 0]]
        p = self.weights[rows[:, 0]] / per_case
        return p / p.sum() if p.sum() > 0 else None

    @staticmethod
    def _centres(case: ArrayCase) -> dict[str, np.ndarray]:
        enh, les = case.labels.get("enhancing"), case.labels.get("lesion")
        empty = np.zeros(0, np.int64)
        active = np.flatnonzero(enh) if enh is not None else empty
        if les is not None:
            near = ndimage.binary_dilation(enh, iterations=2) if enh is not None and enh.any() else np.zeros_like(les)
            chronic = np.flatnonzero(les & ~near)
        else:
            chronic = empty
        return {"active": active, "chronic": chronic, "background": np.flatnonzero(case.brain)}

    def _group_by_lesion(self, case: int, category: str) -> np.ndarray:
        """Reorder ``index[case][category]`` lesion by lesion; return its (case, start, stop) rows."""
        flat = self.index[case][category]
        if not flat.size:
            return np.zeros((0, 3), np.int64)
        mask = np.zeros(self.cases[case].brain.shape, bool)
        mask.flat[flat] = True
        labels, _ = label_components(mask, self.cases[case].spacing_mm)  # the one lesion rule (6-connected)
        ids = labels.flat[flat]
        order = np.argsort(ids, kind="stable")
        self.index[case][category] = flat[order]
        stops = np.cumsum(np.bincount(ids)[1:])
        starts = np.concatenate([[0], stops[:-1]])
        return np.stack([np.full(stops.size, case), starts, stops], axis=1).astype(np.int64)

    def sample_params(self, rng: np.random.Generator) -> PatchParams:
        """Draw a category, a case that has it (or, by lesion, a lesion), a centre voxel and a jitter of up
        to a quarter patch."""
        category = CATEGORIES[int(rng.choice(3, p=self.shares))]
        if category in self.lesions:
            rows, p = self.lesions[category], self._lesion_p[category]
            row = rows[rng.integers(len(rows))] if p is None else rows[int(rng.choice(len(rows), p=p))]
            case, lo, hi = (int(v) for v in row)
            flat = self.index[case][category][lo:hi]
        else:
            candidates = [i for i, idx in enumerate(self.index) if idx[category].size]
            if self.weights is None:
                case = candidates[int(rng.integers(len(candidates)))]
            else:
                p = self.weights[candidates]
                case = candidates[int(rng.choice(len(candidates), p=p / p.sum() if p.sum() > 0 else None))]
            flat = self.index[case][category]
        centre = np.array(np.unravel_index(int(flat[rng.integers(flat.size)]), self.cases[case].brain.shape))
        jitter = rng.integers(-(self.patch // 4), self.patch // 4 + 1, 3)
        corner = centre + jitter - self.patch // 2
        return PatchParams(case, category, tuple(int(c) for c in corner))  # type: ignore[arg-type]

    def windows(self, params: PatchParams) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Source (case) and destination (patch) slices of the patch at ``params``."""
        src, dst = [], []
        for c, n in zip(params.corner, self.cases[params.case].brain.shape, strict=True):
            lo, hi = max(c, 0), min(c + self.patch, n)
            src.append(slice(lo, max(hi, lo)))
            dst.append(slice(lo - c, lo - c + max(hi - lo, 0)))
        return tuple(src), tuple(dst)

    def crop_brain(self, params: PatchParams) -> np.ndarray:
        """The brain mask of the patch at ``params`` (False outside the volume)."""
        src, dst = self.windows(params)
        brain = np.zeros((self.patch,) * 3, bool)
        brain[dst] = self.cases[params.case].brain[src]
        return brain

    def prepare_lesion_simulation(self, t1_channel: int | None, label_maps: Sequence[np.ndarray] | None = None) -> None:
        """Fit every case's lesion model and white matter now, in this process, rather than lazily in each
        DataLoader worker (each would redo them). ``label_maps``: the cases' tissue label maps if already
        computed (the generator's), else the white matter comes from channel ``t1_channel`` (None: none)."""
        self.t1_channel = t1_channel
        for i in range(len(self.cases)):
            self.lesion_model(i)
            if label_maps is not None:
                self._white_matter[i] = np.asarray(label_maps[i]) == 3
            elif t1_channel is not None:
                self._case_white_matter(i)

    def crop_white_matter(self, params: PatchParams) -> np.ndarray | None:
        """White matter of the patch at ``params`` (the WM class of
        :func:`gdfree.data.label_maps.case_label_map`, computed once per case from channel ``t1_channel``);
        None when :attr:`t1_channel` is None."""
        if self.t1_channel is None:
            return None
        src, dst = self.windows(params)
        wm = np.zeros((self.patch,) * 3, bool)
        wm[dst] = self._case_white_matter(params.case)[src]
        return wm

    def _case_white_matter(self, case: int) -> np.ndarray:
        if case not in self._white_matter:
            from gdfree.data.label_maps import case_label_map

            c = self.cases[case]
            assert self.t1_channel is not None
            self._white_matter[case] = case_label_map(c.image, c.brain, c.labels, self.t1_channel) == 3
        return self._white_matter[case]

    def lesion_model(self, case: int) -> LesionModel | None:
        """The lesion contrasts of training case ``case`` (:func:`gdfree.data.lesion_sim.fit_lesion_model`),
        fitted once; None when the case has no lesion label or no lesion."""
        if case not in self._lesion_models:
            c = self.cases[case]
            lesion = c.labels.get("lesion")
            model = None
            if lesion is not None and lesion.any():
                model = fit_lesion_model(c.image, lesion, c.brain, c.spacing_mm, c.labels.get("enhancing"))
            self._lesion_models[case] = model
        return self._lesion_models[case]

    def crop(self, params: PatchParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The patch at ``params``: image (C, P, P, P), target (H, P, P, P) float32, present (H,) bool.

        Regions outside the volume are zero-padded (image 0 = the normalised background).
        """
        case = self.cases[params.case]
        src, dst = self.windows(params)
        image = np.zeros((case.image.shape[0], *(self.patch,) * 3), np.float32)
        image[(slice(None), *dst)] = case.image[(slice(None), *src)]
        target = np.zeros((len(self.heads), *(self.patch,) * 3), np.float32)
        present = np.zeros(len(self.heads), bool)
        for h, head in enumerate(self.heads):
            label = case.labels.get(head)
            if label is not None:
                into: tuple[Any, ...] = (h, *dst)
                target[into] = label[tuple(src)]
                present[h] = True
        return image, target, present


def dataset_case_weights(datasets: Sequence[int], shares: Sequence[float | None]) -> list[float] | None:
    """Per-case weights (for :class:`PatchSampler`) giving dataset ``d`` the share ``shares[d]`` of patches:
    ``datasets`` holds each case's dataset index; datasets whose share is None split what the others leave in
    proportion to their case counts. None when no dataset has a share (every case equally likely)."""
    if all(s is None for s in shares):
        return None
    counts = np.bincount(np.asarray(datasets, int), minlength=len(shares))
    fixed = sum(s for d, s in enumerate(shares) if s is not None and counts[d])
    free = sum(int(counts[d]) for d, s in enumerate(shares) if s is None)
    rest = max(1.0 - fixed, 0.0)
    weights = []
    for d in datasets:
        share = shares[d]
        weights.append(share / counts[d] if share is not None else (rest / free if free else 0.0))
    return weights
