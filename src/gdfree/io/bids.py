"""BIDS discovery: which images and masks each (subject, session) has, and what is missing.

Raw images: ``sub-*/[ses-*/]anat/*_{T1w,T2w,FLAIR,PD}.nii[.gz]``; a T1w with any ``ce-`` entity is the
post-gadolinium image (role ``T1gd``). Masks come from derivatives:
``derivatives/<pipeline>/sub-*/[ses-*/]anat/*_label-lesion_mask``, ``*_label-enhancing_mask`` and
``*_desc-brain_mask``. Names follow pybids conventions (entities ``key-value`` joined by ``_``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.errors import ImageReadError, MissingModalityError
from gdfree.io.images import NIFTI_SUFFIXES, image_suffix, read_mask, read_volume
from gdfree.types import PAIR_ROLES, POST_CONTRAST, PRE_CONTRAST, Case, Volume

__all__ = [
    "BIDS_VERSION",
    "MASK_ENTITIES",
    "PAIR_FILES",
    "CaseFiles",
    "attach_pairs",
    "bids_name",
    "dataset_description",
    "derivative_path",
    "discover_bids",
    "image_entities",
    "is_bids",
    "load_case",
    "parse_entities",
    "read_grid",
]

BIDS_VERSION = "1.9.0"
"""The BIDS version every dataset_description.json gdfree writes declares."""


def dataset_description(name: str, dataset_type: str, **fields: Any) -> dict[str, Any]:
    """The content of a ``dataset_description.json``: ``Name``, ``BIDSVersion``, ``DatasetType`` (``raw`` or
    ``derivative``), then ``fields`` (``GeneratedBy``, ``License``...) in their order."""
    if dataset_type not in ("raw", "derivative"):
        raise ValueError(f"DatasetType: expected raw or derivative, got {dataset_type!r}")
    return {"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": dataset_type, **fields}


_ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")
MASK_ENTITIES: dict[str, dict[str, str]] = {
    "lesion": {"label": "lesion"}, "enhancing": {"label": "enhancing"}, "new": {"label": "new"},
    "brain": {"desc": "brain"},
}  # fmt: skip
"""Mask role -> the entities of its ``_mask`` derivative file (read by discovery, written by import/prepare)."""
_MASK_ENTITIES = {next(iter(e.items())): role for role, e in MASK_ENTITIES.items()}
PAIR_FILES: dict[str, tuple[str, str]] = {"priorFLAIR": ("FLAIR", "prior"), "diffFLAIR": ("map", "FLAIRdifference")}
"""Prior-exam input role -> (suffix, desc) of the file ``gdfree pair`` and ``predict --prior`` write per follow-up."""
assert set(PAIR_FILES) == set(PAIR_ROLES)
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "run", "space", "label", "desc")


def parse_entities(filename: str) -> dict[str, str] | None:
    """Split a BIDS file name into its entities, ``suffix`` and ``extension``; None if it is not one.

    Examples:
        >>> parse_entities("sub-01_ses-2_ce-gadolinium_T1w.nii.gz")
        {'sub': '01', 'ses': '2', 'ce': 'gadolinium', 'suffix': 'T1w', 'extension': '.nii.gz'}
    """
    ext = image_suffix(filename)
    stem = filename[: len(filename) - len(ext)] if ext else filename.rsplit(".", 1)[0]
    if not ext and "." in filename:
        ext = "." + filename.rsplit(".", 1)[1]
    parts = stem.split("_")
    if len(parts) < 2 or not parts[0].startswith("sub-"):
        return None
    entities: dict[str, str] = {}
    for part in parts[:-1]:
        match = _ENTITY.match(part)
        if match is None:
            return None
        entities[match.group(1)] = match.group(2)
    entities["suffix"] = parts[-1]
    entities["extension"] = ext
    return entities


def bids_name(entities: dict[str, str], suffix: str, extension: str = ".nii.gz") -> str:
    """Join entities in BIDS order (unknown keys after known ones) with a suffix and extension."""
    keys = [k for k in ENTITY_ORDER if k in entities] + sorted(k for k in entities if k not in ENTITY_ORDER)
    return "_".join([*(f"{k}-{entities[k]}" for k in keys), suffix]) + extension


def image_entities(role: str) -> tuple[dict[str, str], str]:
    """(entities, suffix) of an image role's BIDS name: the post-Gd T1w is ``ce-gadolinium_T1w``."""
    return ({"ce": "gadolinium"}, "T1w") if role == POST_CONTRAST else ({}, role)


def derivative_path(
    root: Path | str, subject: str, session: str | None, suffix: str, extension: str = ".nii.gz", **entities: str
) -> Path:
    """Where a derivative file of a case lives: ``root/sub-X/[ses-Y/]anat/sub-X[_ses-Y]_<entities>_<suffix>``.

    Examples:
        >>> derivative_path("out", "01", None, "probseg", desc="enhancing").as_posix()
        'out/sub-01/anat/sub-01_desc-enhancing_probseg.nii.gz'
    """
    folder = Path(root) / f"sub-{subject}"
    if session:
        folder = folder / f"ses-{session}"
    names = {"sub": subject, **({"ses": session} if session else {}), **entities}
    return folder / "anat" / bids_name(names, suffix, extension)


@dataclass
class CaseFiles:
    """What discovery found for one exam, before anything is read.

    Attributes:
        subject, session: labels without their ``sub-``/``ses-`` prefixes (session None if absent).
        images: role -> path; masks: role -> path.
        problems: human-readable findings (duplicates, odd names) that did not stop discovery.
        source: the layout it was found in (``bids``, ``open_ms_data``...).
        extra: layout-specific files (transforms, change masks) that are not images of a role.
    """

    subject: str
    session: str | None = None
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    source: str = "bids"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    def input_paths(self, modalities: Iterable[str]) -> list[Path]:
        """The files of those ``modalities`` this case has, in order: what a model reads from it (a prior-exam
        role it lacks reads "no prior") and what its fingerprints cover."""
        return [self.images[m] for m in modalities if m in self.images]

    def missing(self, modalities: Iterable[str] = (), masks: Iterable[str] = ()) -> list[str]:
        """Names of the required modalities and masks this case lacks."""
        return [m for m in modalities if m not in self.images] + [f"mask:{m}" for m in masks if m not in self.masks]


def is_bids(root: Path) -> bool:
    """True if ``root`` looks like a BIDS dataset (a dataset_description.json or sub-* folders)."""
    return (root / "dataset_description.json").is_file() or any(root.glob("sub-*/"))


def _add(found: dict[str, Path], role: str, path: Path, problems: list[str], what: str) -> None:
    if role in found:
        chosen, other = sorted([found[role], path])
        problems.append(f"several {what} files ({chosen.name}, {other.name}): using {chosen.name}")
        found[role] = chosen
    else:
        found[role] = path


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("sub-*") if p.is_file() and image_suffix(p) in NIFTI_SUFFIXES)


def discover_bids(root: Path | str) -> list[CaseFiles]:
    """Find every (subject, session) of a BIDS dataset with its images and derivative masks.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    cases: dict[tuple[str, str | None], CaseFiles] = {}

    def case_for(ent: dict[str, str]) -> CaseFiles:
        key = (ent["sub"], ent.get("ses"))
        if key not in cases:
            cases[key] = CaseFiles(ent["sub"], ent.get("ses"), source="bids")
        return cases[key]

    for anat in sorted([*root.glob("sub-*/anat"), *root.glob("sub-*/ses-*/anat")]):
        for path in _image_files(anat):
            ent = parse_entities(path.name)
            if ent is None:
                continue
            case = case_for(ent)
            _check_folder(path, ent, root, case.problems)
            suffix = ent["suffix"]
            if suffix == "T1w" and "ce" in ent:
                _add(case.images, POST_CONTRAST, path, case.problems, f"post-contrast T1w (ce-{ent['ce']})")
            elif suffix in PRE_CONTRAST and "ce" not in ent:
                _add(case.images, suffix, path, case.problems, suffix)
            elif suffix in PRE_CONTRAST:
                case.problems.append(f"{path.name}: ce- entity on {suffix} is not used (only T1w post-contrast)")

    deriv = root / "derivatives"
    for anat in sorted([*deriv.glob("*/sub-*/anat"), *deriv.glob("*/sub-*/ses-*/anat")]):
        for path in _image_files(anat):
            ent = parse_entities(path.name)
            if ent is None or ent["suffix"] != "mask":
                continue
            role = next((r for (k, v), r in _MASK_ENTITIES.items() if ent.get(k) == v), None)
            if role is None or ("label" in ent and "desc" in ent):
                continue  # a label-X_desc-Y mask is a variant (another rater): the plain label-X one is used
            case = case_for(ent)
            _add(case.masks, role, path, case.problems, f"{role} mask")
    for case in cases.values():
        if not case.images:
            case.problems.append("masks but no images found")
    return [cases[k] for k in sorted(cases, key=lambda k: (k[0], k[1] or ""))]


def attach_pairs(cases: Iterable[CaseFiles], root: Path | str) -> list[CaseFiles]:
    """Add to each case the prior-exam images (:data:`PAIR_FILES`) found for it under ``root`` (a folder
    ``gdfree pair`` or ``predict --prior`` wrote); cases without them are returned unchanged (no prior).

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder of prior-exam images (gdfree pair) not found")
    out = []
    for case in cases:
        paths = {role: derivative_path(root, case.subject, case.session, suffix, desc=desc)
                 for role, (suffix, desc) in PAIR_FILES.items()}  # fmt: skip
        if all(p.is_file() for p in paths.values()):
            case = replace(case, images={**case.images, **paths})
        out.append(case)
    return out


def _check_folder(path: Path, ent: dict[str, str], root: Path, problems: list[str]) -> None:
    rel = path.relative_to(root).parts
    if rel[0] != f"sub-{ent['sub']}":
        problems.append(f"{path.name}: sub-{ent['sub']} in the name but under folder {rel[0]}")
    if len(rel) == 4 and rel[1] != f"ses-{ent.get('ses')}":
        problems.append(f"{path.name}: session entity does not match folder {rel[1]}")


def read_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of an image from its header only (no voxel data read).

    Raises:
        ImageReadError: the header cannot be read.
    """
    suffix = image_suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            img: Any = nib.load(path)
            return tuple(int(s) for s in img.shape), np.asarray(img.affine)
        vol = read_volume(path)
        return vol.shape, vol.affine
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read the image header ({type(exc).__name__}: {exc})") from exc


def load_case(
    files: CaseFiles,
    *,
    modalities: Iterable[str] | None = None,
    masks: Iterable[str] | None = None,
    required: Iterable[str] = (),
    require_same_grid: bool = True,
) -> Case:
    """Read a discovered case into a :class:`Case`.

    Args:
        files: the discovered case.
        modalities: roles to read (default: all found). masks: mask roles to read (default: all found).
        required: roles that must be present (MissingModalityError otherwise).
        require_same_grid: raise GridMismatchError if images/masks are on different grids (set False for
            raw data that ``prepare`` will register).

    Masks are read as bool by :func:`~gdfree.io.images.read_mask` (0 outside, one positive value inside).
    """
    missing = files.missing(required)
    if missing:
        have = ", ".join(sorted(files.images)) or "no images"
        raise MissingModalityError(f"{files.case_id}: missing required {', '.join(missing)} (found {have})")
    image_roles = list(files.images) if modalities is None else [m for m in modalities if m in files.images]
    mask_roles = list(files.masks) if masks is None else [m for m in masks if m in files.masks]
    images = {role: read_volume(files.images[role]) for role in image_roles}
    mask_vols: dict[str, Volume] = {}
    for role in mask_roles:
        mask_vols[role] = read_mask(files.masks[role])
    case = Case(
        files.subject,
        files.session,
        images,
        mask_vols,
        {"source": files.source, **{f"file:{k}": str(v) for k, v in files.images.items()}},
    )
    if require_same_grid:
        case.check_same_grid()
    return case
