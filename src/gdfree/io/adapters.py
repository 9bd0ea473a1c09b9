"""Dataset layouts other than BIDS, and :func:`discover`, which picks the right reader.

open_ms_data (Lesjak et al. 2017, CC-BY), as redistributed in muschellij2/open_ms_data:

- ``cross_sectional/<space>/patientNN/{FLAIR,T1,T2,T1POST,GOLD_STANDARD}_*.nii.gz``: one exam per patient;
  ``T1POST`` is the post-gadolinium T1w (role ``T1gd``), ``GOLD_STANDARD`` the all-lesion consensus mask.
- ``longitudinal/raw/patientNN/studyN_{FLAIR,T1W,T2W}.nii.gz``: one session per study, native space, with
  upstream ITK transforms ``studyN_{T1W,T2W}_intrastudy_to_FLAIR.txt`` and a lesion-change mask ``gt.nii.gz``
  on another grid (kept in ``extra``, not used as a lesion mask). Its patients are other people than the
  cross-sectional ones, so their subject labels get a ``long`` prefix (``longpatient01``).
"""

from __future__ import annotations

import re
from pathlib import Path

from gdfree.io.bids import CaseFiles, discover_bids, is_bids
from gdfree.io.challenges import CHALLENGES, detect_challenge, discover_challenge
from gdfree.io.images import image_suffix

__all__ = ["FORMATS", "discover", "discover_open_ms_data", "is_open_ms_data"]

FORMATS = ("auto", "bids", "open_ms_data", *CHALLENGES)

_PATIENT = re.compile(r"^patient\d+$")
_CROSS_PREFIX = {"FLAIR_": "FLAIR", "T1POST_": "T1gd", "T1_": "T1w", "T2_": "T2w"}
_LONG = re.compile(r"^(study\d+)_(FLAIR|T1W|T2W)$")
_LONG_ROLE = {"FLAIR": "FLAIR", "T1W": "T1w", "T2W": "T2w"}
_LONG_TFM = re.compile(r"^(study\d+)_(T1W|T2W)_intrastudy_to_FLAIR\.txt$")


def _patient_dirs(root: Path) -> list[Path]:
    found = [p for p in root.rglob("patient*") if p.is_dir() and _PATIENT.match(p.name)]
    return sorted(found)


def is_open_ms_data(root: Path) -> bool:
    """True if ``root`` (or a folder below it) holds open_ms_data patient folders."""
    for patient in _patient_dirs(root):
        for f in patient.iterdir():
            if f.name.startswith("GOLD_STANDARD_") or _LONG.match(f.name.split(".")[0]):
                return True
    return False


def discover_open_ms_data(root: Path | str) -> list[CaseFiles]:
    """Find the cases of an open_ms_data tree (cross-sectional and/or longitudinal parts).

    ``root`` may be the top folder or any folder below it that contains patient folders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    cases: list[CaseFiles] = []
    for patient in _patient_dirs(root):
        files = sorted(f for f in patient.iterdir() if f.is_file())
        images = [f for f in files if image_suffix(f)]
        if any(_LONG.match(f.name[: -len(image_suffix(f))]) for f in images):
            cases.extend(_longitudinal(patient, files))
        else:
            case = _cross_sectional(patient, images)
            if case.images or case.masks:
                cases.append(case)
    return cases


def _cross_sectional(patient: Path, images: list[Path]) -> CaseFiles:
    case = CaseFiles(patient.name, None, source=f"open_ms_data:{patient.parent.name}")
    for f in images:
        if f.name.startswith("GOLD_STANDARD_"):
            case.masks["lesion"] = f
            continue
        role = next((r for prefix, r in _CROSS_PREFIX.items() if f.name.startswith(prefix)), None)
        if role is None:
            case.problems.append(f"{f.name}: not a known open_ms_data image name; ignored")
        elif role in case.images:
            case.problems.append(f"several {role} files: using {case.images[role].name}, ignoring {f.name}")
        else:
            case.images[role] = f
    if not case.images:
        case.problems.append("lesion mask only (this subset ships no images for this patient)")
    return case


def _longitudinal(patient: Path, files: list[Path]) -> list[CaseFiles]:
    sessions: dict[str, CaseFiles] = {}
    for f in files:
        ext = image_suffix(f)
        match = _LONG.match(f.name[: -len(ext)]) if ext else None
        if match:
            study, mod = match.groups()
            case = sessions.setdefault(
                study, CaseFiles(f"long{patient.name}", study, source="open_ms_data:longitudinal")
            )
            case.images[_LONG_ROLE[mod]] = f
    for f in files:
        tfm = _LONG_TFM.match(f.name)
        if tfm and tfm.group(1) in sessions:
            role = _LONG_ROLE[tfm.group(2)]
            sessions[tfm.group(1)].extra.setdefault("to_FLAIR_tfm", {})[role] = str(f)
        elif f.name.startswith("gt.nii"):
            for case in sessions.values():
                case.extra["change_mask"] = str(f)
    return [sessions[k] for k in sorted(sessions)]


def discover(root: Path | str, fmt: str = "auto") -> list[CaseFiles]:
    """Discover the cases of a dataset in a known layout (``fmt`` one of FORMATS; ``auto`` detects).

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: unknown ``fmt``, or ``auto`` recognised no layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "bids" or (fmt == "auto" and is_bids(root)):
        return discover_bids(root)
    if fmt == "open_ms_data" or (fmt == "auto" and is_open_ms_data(root)):
        return discover_open_ms_data(root)
    if fmt in CHALLENGES:
        return discover_challenge(root, fmt)
    found = detect_challenge(root)
    if found is not None:
        return discover_challenge(root, found)
    raise ValueError(
        f"{root}: no known dataset layout (BIDS needs dataset_description.json or sub-* folders; open_ms_data "
        f"needs patientNN folders; challenge layouts: {', '.join(CHALLENGES)}); pass --format"
    )
