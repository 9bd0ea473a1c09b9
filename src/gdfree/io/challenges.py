"""Readers for the published MS lesion challenge layouts, by their exact file names.

- ``miccai2008`` (MS Lesion Segmentation Challenge 2008, CHB and UNC): ``<CHB|UNC>_<train|test1|...>_CaseNN/``
  ``<case>_{FLAIR,T1,T2}.{nhdr,nrrd,mha}`` and, for training cases, ``<case>_lesion.*``.
- ``isbi2015`` (ISBI 2015 longitudinal): ``trainingNN_TT_{flair,mprage,pd,t2}_pp.nii[.gz]`` (``testNN_TT_...``
  for the test set), masks ``trainingNN_TT_mask1`` and ``_mask2`` (two raters): rater 1 is the lesion mask
  by default, the other rater's file is kept in ``extra["lesion_raters"]``. Subject ``trainingNN``, session ``TT``.
- ``msseg2016`` (MICCAI 2016 MSSEG): ``.../Center_CC/Patient_PP/Preprocessed_Data/{FLAIR,T1,T2,DP,GADO}_preprocessed``
  and ``Masks/{Consensus,Brain_Mask,ManualSegmentation_N}``; GADO is the post-Gd T1w (``T1gd``), DP is PD.
- ``shifts2022`` (Shifts MS, 2022): ``<cohort>/<split>/{flair,t1,t2,pd,...}/<id>_<MOD>_isovox.nii.gz``,
  ``gt/<id>_gt_isovox`` (lesions), ``fg_mask/<id>_isovox_fg_mask`` (brain). Subject ``<cohort><split><id>``
  with only letters and digits.

BIDS labels allow letters and digits only, so subject labels are the source names with everything else removed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from gdfree.io.bids import CaseFiles
from gdfree.io.images import image_suffix

__all__ = ["CHALLENGES", "detect_challenge", "discover_challenge"]


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _stem(path: Path) -> str:
    return path.name[: -len(image_suffix(path))] if image_suffix(path) else path.name


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and image_suffix(p))


def _put(case: CaseFiles, kind: str, role: str, path: Path) -> None:
    found = case.images if kind == "image" else case.masks
    if role in found and found[role] != path:
        case.problems.append(f"several {role} files: using {found[role].name}, ignoring {path.name}")
    else:
        found[role] = path


_M2008 = re.compile(r"^(?P<case>(?:CHB|UNC)_[A-Za-z0-9]+_Case\d+)_(?P<mod>FLAIR|T1|T2|lesion)$", re.IGNORECASE)
_M2008_ROLE = {"flair": ("image", "FLAIR"), "t1": ("image", "T1w"), "t2": ("image", "T2w"),
               "lesion": ("mask", "lesion")}  # fmt: skip


def _miccai2008(root: Path) -> list[CaseFiles]:
    cases: dict[str, CaseFiles] = {}
    for path in _images(root):
        m = _M2008.match(_stem(path))
        if m:
            case = cases.setdefault(m["case"], CaseFiles(_label(m["case"]), None, source="miccai2008"))
            _put(case, *_M2008_ROLE[m["mod"].lower()], path)
    return [cases[k] for k in sorted(cases)]


_ISBI = re.compile(r"^(?P<sub>(?:training|test)\d+)_(?P<ses>\d+)_(?P<mod>flair|mprage|pd|t2)_pp$")
_ISBI_MASK = re.compile(r"^(?P<sub>(?:training|test)\d+)_(?P<ses>\d+)_mask(?P<rater>\d)$")
_ISBI_ROLE = {"flair": "FLAIR", "mprage": "T1w", "pd": "PD", "t2": "T2w"}


def _isbi2015(root: Path, rater: int = 1) -> list[CaseFiles]:
    cases: dict[tuple[str, str], CaseFiles] = {}
    for path in _images(root):
        stem = _stem(path)
        m = _ISBI.match(stem) or _ISBI_MASK.match(stem)
        if not m:
            continue
        case = cases.setdefault((m["sub"], m["ses"]), CaseFiles(m["sub"], m["ses"], source="isbi2015"))
        if "mod" in m.groupdict():
            _put(case, "image", _ISBI_ROLE[m["mod"]], path)
        else:
            case.extra.setdefault("lesion_raters", {})[int(m["rater"])] = str(path)
            if int(m["rater"]) == rater:
                _put(case, "mask", "lesion", path)
    return [cases[k] for k in sorted(cases)]


_MSSEG_IMAGE = re.compile(r"^(?P<mod>FLAIR|T1|T2|DP|GADO)_preprocessed$")
_MSSEG_ROLE = {"FLAIR": "FLAIR", "T1": "T1w", "T2": "T2w", "DP": "PD", "GADO": "T1gd"}
_MSSEG_MASK = {"Consensus": "lesion", "Brain_Mask": "brain"}


def _msseg_subject(folder: Path) -> str:
    centre = next((re.sub(r"\D", "", p) for p in folder.parts if re.match(r"(?i)^center_?\d+$", p)), "")
    patient = next((re.sub(r"\D", "", p) for p in folder.parts if re.match(r"(?i)^patient_?\d+$", p)), "")
    return f"center{centre}patient{patient}" if centre and patient else _label(folder.name)


def _msseg2016(root: Path) -> list[CaseFiles]:
    cases: dict[Path, CaseFiles] = {}
    for path in _images(root):
        stem = _stem(path)
        folder = path.parent.parent if path.parent.name in ("Preprocessed_Data", "Masks") else path.parent
        m = _MSSEG_IMAGE.match(stem)
        if m:
            case = cases.setdefault(folder, CaseFiles(_msseg_subject(folder), None, source="msseg2016"))
            _put(case, "image", _MSSEG_ROLE[m["mod"]], path)
        elif stem in _MSSEG_MASK or stem.startswith("ManualSegmentation_"):
            case = cases.setdefault(folder, CaseFiles(_msseg_subject(folder), None, source="msseg2016"))
            if stem in _MSSEG_MASK:
                _put(case, "mask", _MSSEG_MASK[stem], path)
            else:
                case.extra.setdefault("lesion_raters", {})[int(stem.split("_")[-1])] = str(path)
    return [cases[k] for k in sorted(cases)]


_SHIFTS = re.compile(r"^(?P<id>\d+)_(?P<mod>FLAIR|T1|T2|PD|GADO|gt)_isovox$")
_SHIFTS_FG = re.compile(r"^(?P<id>\d+)_isovox_fg_mask$")
_SHIFTS_ROLE = {"FLAIR": ("image", "FLAIR"), "T1": ("image", "T1w"), "T2": ("image", "T2w"), "PD": ("image", "PD"),
                "GADO": ("image", "T1gd"), "gt": ("mask", "lesion")}  # fmt: skip


def _shifts2022(root: Path) -> list[CaseFiles]:
    cases: dict[tuple[Path, str], CaseFiles] = {}
    for path in _images(root):
        stem = _stem(path)
        m = _SHIFTS.match(stem) or _SHIFTS_FG.match(stem)
        if not m:
            continue
        split = path.parent.parent  # <cohort>/<split>/<modality folder>/file
        key = (split, m["id"])
        if key not in cases:
            cohort = split.parent.name if split.parent != root.parent else ""
            cases[key] = CaseFiles(_label(f"{cohort}{split.name}{m['id']}"), None, source="shifts2022")
        kind, role = _SHIFTS_ROLE[m["mod"]] if "mod" in m.groupdict() else ("mask", "brain")
        _put(cases[key], kind, role, path)
    return [cases[k] for k in sorted(cases, key=lambda k: (str(k[0]), int(k[1])))]


CHALLENGES: dict[str, Callable[[Path], list[CaseFiles]]] = {
    "msseg2016": _msseg2016, "isbi2015": _isbi2015, "miccai2008": _miccai2008, "shifts2022": _shifts2022,
}  # fmt: skip


def discover_challenge(root: Path | str, fmt: str) -> list[CaseFiles]:
    """The cases of a challenge tree in layout ``fmt`` (one of :data:`CHALLENGES`).

    Raises:
        FileNotFoundError: ``root`` is not a folder. ValueError: unknown format, or no case in that layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset folder not found")
    if fmt not in CHALLENGES:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(CHALLENGES)}")
    cases = CHALLENGES[fmt](root)
    if not cases:
        raise ValueError(f"{root}: no {fmt} case found (see gdfree.io.challenges for the file names it expects)")
    for case in cases:
        if not case.images:
            case.problems.append("masks but no images found")
    return cases


def detect_challenge(root: Path) -> str | None:
    """The first challenge layout with at least one case under ``root``, or None."""
    for name, reader in CHALLENGES.items():
        if reader(root):
            return name
    return None
