"""Every folder that looks like a case is a case or is named with the reason it is not (issue 33).

Discovery (:func:`gdfree.io.adapters.discover`) returns the cases it can read. :func:`not_cases` lists what
it passed over, so that no command drops a subject without a word:

- a BIDS folder named like a subject or session (``sub-*``/``ses-*`` in any letter case) whose label is not
  BIDS (letters and digits only: ``sub-01_baseline``, ``sub-P 01``, ``sub-01-a``, accents, ``Sub-02``), with
  the valid label it could be renamed to;
- a subject or session folder that holds no usable image: images outside ``anat/``, file names that are not
  BIDS names of that subject, or no image at all;
- an image file in an ``anat/`` folder whose name is not a BIDS name (it would be ignored);
- a discovered case with masks but no images (open_ms_data's patients with a lesion mask only).

``gdfree info`` lists them and exits 1; ``prepare`` and ``predict`` list them, write them to
``OUT/not_cases.tsv`` beside ``failures.tsv`` and exit 1.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from gdfree.io.adapters import discover
from gdfree.io.bids import CaseFiles, is_bids, parse_entities
from gdfree.io.images import NIFTI_SUFFIXES, image_suffix
from gdfree.io.tables import write_tsv

__all__ = ["NOT_CASES", "NotACase", "bad_subject_label", "bids_label", "not_cases", "write_not_cases"]

NOT_CASES = "not_cases.tsv"
"""The file cohort commands list :func:`not_cases` in, beside ``failures.tsv``."""

_LABEL = re.compile(r"^[a-zA-Z0-9]+$")


@dataclass(frozen=True)
class NotACase:
    """Something that looks like a case, or a file of one, that no command will read, and why."""

    path: str
    """Relative to the dataset folder."""
    reason: str


def bids_label(label: str) -> str:
    """The BIDS label nearest to ``label``: accents dropped, anything but letters and digits removed.

    Examples:
        >>> bids_label("01_baseline"), bids_label("P 01"), bids_label("Müller-2")
        ('01baseline', 'P01', 'Muller2')
    """
    ascii_only = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-zA-Z0-9]", "", ascii_only)


def _images(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in found if p.is_file() and image_suffix(p) in NIFTI_SUFFIXES)


def bad_subject_label(name: str) -> bool:
    """Whether folder ``name`` looks like a subject folder (``sub-`` in any letter case) but is not a BIDS one."""
    return name.lower().startswith("sub-") and _bad_label(name, "sub", name) is not None


def _bad_label(rel: str, prefix: str, name: str) -> NotACase | None:
    """A NotACase when folder ``name`` is ``prefix-<label>`` with a label that is not BIDS (or a wrong case)."""
    label = name[len(prefix) + 1 :]
    if name.startswith(f"{prefix}-") and _LABEL.match(label):
        return None
    fixed = bids_label(label)
    how = " (gdfree import does it, with the mapping in import.tsv)" if prefix == "sub" else ""
    fix = f"; rename it to {prefix}-{fixed} (and its files to match){how}" if fixed else ""
    return NotACase(rel, f"{name!r} is not a BIDS {'subject' if prefix == 'sub' else 'session'} folder name "
                         f"({prefix}- in lower case, then letters and digits only){fix}")  # fmt: skip


def _why_empty(root: Path, folder: Path, subject: str, skip: set[Path]) -> str:
    """Why a subject/session ``folder`` gave no case with images (``skip``: its session folders)."""
    images = [p for p in _images(folder, True) if not any(s in p.parents for s in skip)]
    anat = folder / "anat"
    outside = [p for p in images if p.parent != anat]
    if outside:
        names = ", ".join(str(p.relative_to(root)) for p in outside[:3])
        return f"{len(outside)} image(s) outside {anat.relative_to(root)}/ ({names}): BIDS keeps them in anat/"
    if images:
        other = [p.name for p in images if (parse_entities(p.name) or {}).get("sub") != subject]
        if other:
            return f"no image in anat/ is named as a file of sub-{subject} ({', '.join(other[:3])})"
        return "no T1w, T2w, FLAIR or PD image in anat/ (" + ", ".join(p.name for p in images[:3]) + ")"
    return "no image file (.nii or .nii.gz)"


def _bids(root: Path, cases: list[CaseFiles]) -> list[NotACase]:
    with_images = {(c.subject, c.session) for c in cases if c.images}
    found: list[NotACase] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("sub-")):
        bad = _bad_label(sub.name, "sub", sub.name)
        if bad is not None:
            found.append(bad)
            continue
        subject = sub.name[4:]
        sessions = sorted(p for p in sub.iterdir() if p.is_dir() and p.name.lower().startswith("ses-"))
        good = []
        for ses in sessions:
            bad = _bad_label(f"{sub.name}/{ses.name}", "ses", ses.name)
            if bad is not None:
                found.append(bad)
            else:
                good.append(ses)
                if (subject, ses.name[4:]) not in with_images:
                    found.append(NotACase(f"{sub.name}/{ses.name}", _why_empty(root, ses, subject, set())))
        if not sessions and (subject, None) not in with_images:
            found.append(NotACase(sub.name, _why_empty(root, sub, subject, set(good))))
        for anat in [sub / "anat", *(s / "anat" for s in good)]:
            for path in _images(anat, False) if anat.is_dir() else []:
                if parse_entities(path.name) is None:
                    found.append(NotACase(str(path.relative_to(root)), "not a BIDS file name "
                                          "(sub-<label>[_ses-<label>]_<suffix>.nii.gz); ignored"))  # fmt: skip
    return found


def not_cases(root: Path | str, fmt: str = "auto", cases: list[CaseFiles] | None = None) -> list[NotACase]:
    """What in dataset ``root`` looks like a case but is not one, with the reason (module docstring);
    ``cases``: its discovered cases when already at hand."""
    root = Path(root)
    cases = discover(root, fmt) if cases is None else cases
    found = [NotACase(c.case_id, "; ".join(c.problems) or "masks but no image")
             for c in cases if not c.images]  # fmt: skip
    if fmt == "bids" or (fmt == "auto" and is_bids(root)):
        named = {n.path for n in found}
        found += [n for n in _bids(root, cases) if n.path not in named]
    return found


def write_not_cases(folder: Path | str, items: list[NotACase]) -> Path | None:
    """``folder/not_cases.tsv`` (path, reason), or nothing (and any stale one removed) when ``items`` is empty."""
    path = Path(folder) / NOT_CASES
    if not items:
        path.unlink(missing_ok=True)
        return None
    write_tsv(path, [{"path": n.path, "reason": n.reason} for n in items])
    return path
