"""The data model: a :class:`Volume` is one 3-D image on a grid, a :class:`Case` is one exam.

Every reader produces these and every writer consumes them, so whatever a preprocessing step records
about a case reaches the writer unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.errors import GridMismatchError, InputRoleError, MissingModalityError

__all__ = [
    "MASK_ROLES",
    "PAIR_ROLES",
    "POST_CONTRAST",
    "PRE_CONTRAST",
    "Case",
    "Volume",
    "canonical_modality",
    "check_input_modalities",
    "exam_roles",
    "spacing_from_affine",
]

PRE_CONTRAST: tuple[str, ...] = ("T1w", "T2w", "FLAIR", "PD")
"""Modality roles that may be model inputs."""

POST_CONTRAST = "T1gd"
"""Role of the post-gadolinium T1-weighted image: a label/target source, never an input (but in ``oracle``)."""

PAIR_ROLES: tuple[str, ...] = ("priorFLAIR", "diffFLAIR")
"""Input roles that come from a prior exam (``gdfree pair``, :mod:`gdfree.preprocess.pair`): the prior's FLAIR
registered and intensity-matched onto this exam, and this exam's FLAIR minus it in noise units. An exam without
a prior gives them as "nothing changed": the prior is its own FLAIR, the difference 0 (one model serves both)."""

MASK_ROLES: tuple[str, ...] = ("lesion", "enhancing", "new", "brain")
"""Mask roles: all T2/FLAIR lesions, Gd-enhancing lesions, new or enlarging lesions since the prior exam, brain."""

_ALIASES: dict[str, str] = {
    "t1": "T1w", "t1w": "T1w", "mprage": "T1w", "t1pre": "T1w",
    "t2": "T2w", "t2w": "T2w",
    "flair": "FLAIR", "t2flair": "FLAIR",
    "pd": "PD", "dp": "PD", "pdw": "PD",
    "t1gd": POST_CONTRAST, "t1post": POST_CONTRAST, "t1ce": POST_CONTRAST, "t1c": POST_CONTRAST,
    "gado": POST_CONTRAST, "t1wks": POST_CONTRAST, "t1w_ce": POST_CONTRAST,
    "priorflair": "priorFLAIR", "diffflair": "diffFLAIR",
}  # fmt: skip


def canonical_modality(name: str) -> str:
    """Map a modality name as users and challenges spell it (``t1``, ``MPRAGE``, ``T1POST``) to its role.

    Raises:
        ValueError: the name is not a known modality.

    Examples:
        >>> canonical_modality("flair"), canonical_modality("T1POST")
        ('FLAIR', 'T1gd')
    """
    key = name.strip().lower().replace("-", "_")
    if key not in _ALIASES:
        known = ", ".join((*PRE_CONTRAST, POST_CONTRAST, *PAIR_ROLES))
        raise ValueError(f"modality {name!r} is not known; expected one of {known} (or a common alias)")
    return _ALIASES[key]


def check_input_modalities(modalities: Iterable[str], *, oracle: bool = False) -> tuple[str, ...]:
    """Canonicalise model-input modality names and enforce the inputs rule of DESIGN.md.

    A post-contrast image may be an input only in the explicitly named ``oracle`` configuration.

    Raises:
        InputRoleError: a post-contrast modality was asked for and ``oracle`` is False, or the list is empty.
    """
    roles = tuple(canonical_modality(m) for m in modalities)
    if not roles:
        raise InputRoleError("input modalities: expected at least one of " + ", ".join(PRE_CONTRAST))
    if POST_CONTRAST in roles and not oracle:
        raise InputRoleError(
            f"input modalities {list(modalities)}: {POST_CONTRAST} (post-gadolinium, BIDS 'ce-') is a label "
            "source and may not be a model input; only the 'oracle' configuration may use it"
        )
    if len(set(roles)) != len(roles):
        raise InputRoleError(f"input modalities {list(modalities)}: a modality is listed twice")
    paired = [r for r in roles if r in PAIR_ROLES]
    if paired and (len(paired) != len(PAIR_ROLES) or "FLAIR" not in roles):
        raise InputRoleError(f"input modalities {list(modalities)}: the prior-exam channels come together "
                             f"({', '.join(PAIR_ROLES)}) and with the FLAIR they were made from")
    return roles


def exam_roles(modalities: Iterable[str]) -> tuple[str, ...]:
    """The input roles an exam must have itself: all but :data:`PAIR_ROLES` (absent without a prior exam)."""
    return tuple(m for m in modalities if m not in PAIR_ROLES)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis: the lengths of the affine's first three columns."""
    sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return float(sizes[0]), float(sizes[1]), float(sizes[2])


@dataclass(frozen=True, eq=False)
class Volume:
    """One 3-D image: voxel array, voxel-to-RAS+ affine in mm, and where it came from.

    Attributes:
        data: array of shape (X, Y, Z), any numeric or bool dtype, indexed like nibabel's data.
        affine: (4, 4) voxel index -> RAS+ world mm (NIfTI convention).
        path: file it was read from, if any (used in error messages).
        qform_code, sform_code: NIfTI codes kept through a read/write round trip.
    """

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    qform_code: int = 1
    sform_code: int = 1

    def __post_init__(self) -> None:
        where = f"{self.path}: " if self.path else ""
        if self.data.ndim != 3:
            raise ValueError(f"{where}Volume data must be 3-D (X, Y, Z), got shape {self.data.shape}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"{where}Volume affine must be a finite 4x4 matrix, got {self.affine!r}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError(f"{where}Volume affine is singular: {affine.tolist()}")
        object.__setattr__(self, "affine", affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.data.shape
        return (x, y, z)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along each array axis in mm (column norms of the affine)."""
        return spacing_from_affine(self.affine)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def orientation(self) -> str:
        """Axis codes such as ``'RAS'`` or ``'LPI'`` (nibabel's ``aff2axcodes``)."""
        import nibabel as nib

        return "".join(str(c) for c in nib.orientations.aff2axcodes(self.affine))

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when both volumes have the same shape and their affines agree within ``atol_mm``."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol_mm))

    def with_data(self, data: np.ndarray, path: Path | None = None) -> Volume:
        """A volume on the same grid holding ``data`` (same shape required)."""
        if data.shape != self.shape:
            raise ValueError(f"with_data: expected shape {self.shape}, got {data.shape}")
        return Volume(data, self.affine, path, self.qform_code, self.sform_code)


@dataclass(eq=False)
class Case:
    """One exam of one subject: its images by role, its masks by role and its provenance.

    Attributes:
        subject: subject label without ``sub-``.
        session: session label without ``ses-``, or None.
        images: role (``T1w``, ``T2w``, ``FLAIR``, ``PD``, ``T1gd``) -> Volume.
        masks: role (``lesion``, ``enhancing``, ``brain``) -> Volume.
        provenance: free-form facts about the source (format, dataset root, what a step did).
    """

    subject: str
    session: str | None = None
    images: dict[str, Volume] = field(default_factory=dict)
    masks: dict[str, Volume] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        """BIDS-style identifier, ``sub-01`` or ``sub-01_ses-02``."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    def _all_volumes(self) -> Mapping[str, Volume]:
        return {**self.images, **{f"mask:{k}": v for k, v in self.masks.items()}}

    def check_same_grid(self) -> None:
        """Raise GridMismatchError, naming both files, if any image or mask is on another grid."""
        vols = list(self._all_volumes().items())
        if not vols:
            return
        ref_name, ref = vols[0]
        for name, vol in vols[1:]:
            if not vol.same_grid(ref):
                raise GridMismatchError(
                    f"{self.case_id}: {name} ({vol.path or 'in memory'}, shape {vol.shape}, spacing "
                    f"{_fmt(vol.spacing_mm)} mm) is not on the grid of {ref_name} ({ref.path or 'in memory'}, "
                    f"shape {ref.shape}, spacing {_fmt(ref.spacing_mm)} mm); register or resample them onto one "
                    "grid first"
                )

    def require(self, modalities: Iterable[str] = (), masks: Iterable[str] = ()) -> None:
        """Raise MissingModalityError naming the case and what is missing."""
        missing = [m for m in modalities if m not in self.images]
        missing += [f"mask:{m}" for m in masks if m not in self.masks]
        if missing:
            have = sorted(self._all_volumes())
            raise MissingModalityError(f"{self.case_id}: missing {', '.join(missing)} (has {', '.join(have)})")

    def input_array(self, modalities: Iterable[str], *, oracle: bool = False) -> np.ndarray:
        """Stack the requested input modalities into a float32 array of shape (C, X, Y, Z).

        Raises:
            InputRoleError: a post-contrast modality requested outside ``oracle``.
            MissingModalityError: a requested modality is absent.
            GridMismatchError: the modalities are not on one grid.
        """
        roles = check_input_modalities(modalities, oracle=oracle)
        self.require(roles)
        sub = Case(self.subject, self.session, {r: self.images[r] for r in roles})
        sub.check_same_grid()
        return np.stack([self.images[r].data.astype(np.float32, copy=False) for r in roles])


def _fmt(values: Iterable[float]) -> str:
    return "x".join(f"{v:.3g}" for v in values)
