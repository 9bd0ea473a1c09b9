"""Two sessions of one synthetic subject (``gdfree synth --timepoints 2``): a prior exam and the follow-up.

The follow-up is the subject :func:`~gdfree.phantom.subject.sample_subject` draws, unchanged (its images and truth
equal the single-session cohort's). Each of its lesions gets a status (:data:`STATUSES`):

- ``new``: absent from the prior. Every active (enhancing) lesion is new, as in the disease (enhancement lasts
  weeks; a lesion enhancing today was not there months ago), and so is a share of the chronic-looking ones
  (``new_inactive``): new since the prior but already past enhancement.
- ``enlarging``: in the prior at ``enlarge_scale`` of its linear size (a volume 2-6x smaller).
- ``shrinking``: in the prior at ``shrink_scale`` of its size.
- ``stable``: the same lesion in both.

The prior is its own acquisition: other gains, bias fields and noise, no enhancing lesion, and the head placed
differently in the scanner (a rigid move of ``move_degrees`` per axis and ``move_mm`` per axis about the brain
centre, random signs), resampled onto the same grid trilinearly, so that a method that skips registration sees the
move. The anatomy (tissue, texture, vessels, a confluent band) is the subject's at both times.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from gdfree.phantom.config import PhantomConfig
from gdfree.phantom.lesions import LesionParams, render_lesion
from gdfree.phantom.subject import SubjectParams
from gdfree.types import POST_CONTRAST

__all__ = ["STATUSES", "PairConfig", "apply_move", "draw_pair", "head_move", "status_map"]

STATUSES = ("new", "enlarging", "stable", "shrinking")

ENLARGING_MIN_VOXELS = 8
"""Follow-up mask voxels a lesion needs to be drawn as enlarging: its prior (as small as 0.55^3 of its volume)
then still fills a voxel."""


@dataclass(frozen=True)
class PairConfig:
    """How the prior session differs from the follow-up (see the module docstring)."""

    new_inactive: float = 0.15
    enlarging: float = 0.25
    shrinking: float = 0.10
    enlarge_scale: tuple[float, float] = (0.55, 0.8)
    shrink_scale: tuple[float, float] = (1.15, 1.3)
    move_degrees: tuple[float, float] = (0.5, 4.0)
    move_mm: tuple[float, float] = (0.5, 5.0)

    def __post_init__(self) -> None:
        shares = (self.new_inactive, self.enlarging, self.shrinking)
        if min(shares) < 0 or self.enlarging + self.shrinking > 1 or self.new_inactive > 1:
            raise ValueError(f"new_inactive, enlarging, shrinking: expected probabilities (enlarging + shrinking "
                             f"<= 1), got {shares}")  # fmt: skip
        if not 0 < self.enlarge_scale[0] <= self.enlarge_scale[1] < 1:
            raise ValueError(f"enlarge_scale: expected 0 < low <= high < 1, got {self.enlarge_scale}")
        if not 1 < self.shrink_scale[0] <= self.shrink_scale[1]:
            raise ValueError(f"shrink_scale: expected 1 < low <= high, got {self.shrink_scale}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _statuses(rng: np.random.Generator, lesions: list[LesionParams], pair: PairConfig) -> dict[int, str]:
    out: dict[int, str] = {}
    for lesion in lesions:
        u = float(rng.random())
        if lesion.active or u < pair.new_inactive:
            out[lesion.id] = "new"
            continue
        v = float(rng.random())
        grows = v < pair.enlarging and lesion.mask_voxels >= ENLARGING_MIN_VOXELS
        shrinks = pair.enlarging <= v < pair.enlarging + pair.shrinking
        out[lesion.id] = "enlarging" if grows else "shrinking" if shrinks else "stable"
    return out


def draw_pair(
    rng: np.random.Generator, followup: SubjectParams, cfg: PhantomConfig, pair: PairConfig
) -> tuple[SubjectParams, dict[int, str]]:
    """The prior session's parameters and each follow-up lesion's status (lesion id -> one of STATUSES).

    ``followup`` must have been rendered (its lesions' ``mask_voxels`` decide which may be enlarging).
    """
    status = _statuses(rng, followup.lesions, pair)
    lesions = []
    for lesion in followup.lesions:
        kind = status[lesion.id]
        if kind == "new":
            continue
        old = copy.deepcopy(lesion)
        old.active, old.pattern, old.enhance_gain, old.opening_dir = False, None, 0.0, None
        old.enhance_inner = old.enhance_outer = 0.0
        if kind in ("enlarging", "shrinking"):
            low, high = pair.enlarge_scale if kind == "enlarging" else pair.shrink_scale
            old.scale = round(float(rng.uniform(low, high)), 3)
            old.bounding_radius_mm = round(lesion.bounding_radius_mm * old.scale, 3)
        old.volume_mm3 = old.enhancing_volume_mm3 = 0.0
        old.mask_voxels = 0
        lesions.append(old)
    roles = (*cfg.modalities, POST_CONTRAST)
    gain = {m: round(float(rng.uniform(0.8, 1.25)), 4) for m in roles}
    bias = {m: np.round(rng.normal(0.0, cfg.bias_strength / 2, 9), 4).tolist() for m in cfg.modalities}
    bias[POST_CONTRAST] = bias.get("T1w", np.round(rng.normal(0.0, cfg.bias_strength / 2, 9), 4).tolist())
    if followup.domain is not None and cfg.bias_strength > 0:  # the subject's randomised bias strength
        factor = followup.domain["bias_strength"] / cfg.bias_strength
        bias = {m: np.round(np.asarray(c) * factor, 4).tolist() for m, c in bias.items()}
    prior = copy.deepcopy(followup)
    prior.gain, prior.bias, prior.lesions, prior.n_active_drawn = gain, bias, lesions, 0
    prior.noise_seed = int(rng.integers(2**31))
    return prior, status


def head_move(rng: np.random.Generator, pair: PairConfig, centre_mm: Sequence[float]) -> np.ndarray:
    """A 4x4 rigid move (RAS mm) about ``centre_mm``: where the prior's head sits, as a map of world points."""
    from gdfree.preprocess.registration import rigid_matrix

    angles = rng.uniform(*pair.move_degrees, 3) * rng.choice([-1, 1], 3)
    shifts = rng.uniform(*pair.move_mm, 3) * rng.choice([-1, 1], 3)
    return rigid_matrix(angles, shifts, centre_mm)


def apply_move(volume: np.ndarray, affine: np.ndarray, move: np.ndarray, *, order: int = 1) -> np.ndarray:
    """``volume`` resampled on its own grid so that voxel x holds what ``volume`` has at world point move @ x.

    A follow-up point p then sits at move^-1 @ p in the result: the transform from the follow-up's points to
    the prior's (ITK's fixed -> moving) is move^-1.
    """
    to_vox = np.linalg.inv(affine) @ move @ affine
    out = ndimage.affine_transform(
        volume.astype(np.float32), to_vox[:3, :3], offset=to_vox[:3, 3], order=order, mode="constant", cval=0.0
    )
    return out.astype(np.float32)


def status_map(
    lesions: list[LesionParams], status: dict[int, str], affine: np.ndarray, shape: tuple[int, int, int],
    cfg: PhantomConfig,
) -> np.ndarray:  # fmt: skip
    """uint8 map of the follow-up lesions by status: 1 + the index in STATUSES (0 no lesion)."""
    out = np.zeros(shape, np.uint8)
    for lesion in lesions:
        r = render_lesion(
            lesion, affine, shape, halo_radius_mm=cfg.halo_radius_mm, halo_width_mm=cfg.halo_width_mm,
            supersample=cfg.supersample_factor,
        )  # fmt: skip
        out[r.slices][r.lesion >= 0.5] = 1 + STATUSES.index(status[lesion.id])
    return out
