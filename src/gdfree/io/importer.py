"""``gdfree import``: copy any dataset :func:`~gdfree.io.adapters.discover` reads into a BIDS dataset.

Images become ``DEST/sub-X/[ses-Y/]anat/sub-X[_ses-Y]_<suffix>.nii.gz`` (post-Gd T1w: ``ce-gadolinium_T1w``;
NRRD/MHA converted to NIfTI with the same voxels and physical placement); masks become binary uint8
``DEST/derivatives/<format>/sub-X/.../*_{label-lesion,label-enhancing,desc-brain}_mask.nii.gz``, other raters'
lesion masks ``*_label-lesion_desc-raterN_mask.nii.gz``. ``DEST/import.tsv`` lists every source file, its
SHA-256 and where it went. The source is only read. A BIDS subject folder whose label is not BIDS
(``sub-01_baseline``, ``Sub-02``, which discovery passes over) is imported under the nearest valid label
(``sub-01baseline``, ``sub-02``), files renamed to match; ``import.tsv``'s ``renamed_from`` keeps the mapping.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import gdfree
from gdfree.io.bids import (
    MASK_ENTITIES,
    CaseFiles,
    bids_name,
    dataset_description,
    derivative_path,
    discover_bids,
    image_entities,
    is_bids,
)
from gdfree.io.images import file_sha256, read_mask, read_volume, write_volume
from gdfree.io.tables import write_json, write_tsv

__all__ = ["import_dataset"]


def import_dataset(src: Path | str, dest: Path | str, fmt: str = "auto") -> list[dict[str, Any]]:
    """Convert the dataset at ``src`` (layout ``fmt``) to BIDS in ``dest``; returns the rows of import.tsv.

    Raises:
        FileExistsError: ``dest`` exists and is not empty (nothing is overwritten).
        OutputConflictError: ``dest`` overlaps ``src``.
        ValueError / FileNotFoundError: no dataset in that layout; ImageReadError: an unreadable file (named).
    """
    from gdfree.io.adapters import discover
    from gdfree.io.runs import check_output_folder

    src, dest = Path(src), check_output_folder(dest, [src], what="DEST")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: not empty; import writes into a new or empty folder")
    with tempfile.TemporaryDirectory(prefix="gdfree-import-") as tmp:
        cases, renamed = discover(src, fmt), {}
        if fmt == "bids" or (fmt == "auto" and is_bids(src)):
            renamed = _renamed_view(src, Path(tmp))
            cases += discover_bids(tmp) if renamed else []
        return _import_cases(src, dest, fmt, cases, {new[4:]: old for old, new in renamed.items()})


def _import_cases(
    src: Path, dest: Path, fmt: str, cases: list[CaseFiles], renamed: dict[str, str]
) -> list[dict[str, Any]]:
    """Write ``cases`` into ``dest`` as BIDS (``renamed``: new subject label -> the source folder it came from,
    recorded in import.tsv's ``renamed_from``); returns the rows of import.tsv."""
    fmt_name = fmt if fmt != "auto" else (cases[0].source.split(":")[0] if cases else "import")
    rows: list[dict[str, Any]] = []
    for case in cases:
        ses = {"ses": case.session} if case.session else {}
        folder = dest / f"sub-{case.subject}" / (f"ses-{case.session}" if case.session else "") / "anat"
        for role, path in case.images.items():
            entities, suffix = image_entities(role)
            target = folder / bids_name({"sub": case.subject, **ses, **entities}, suffix)
            write_volume(read_volume(path), target)
            rows.append(_row(case.case_id, role, path, target, dest, renamed.get(case.subject, "")))
        deriv = dest / "derivatives" / fmt_name
        masks = [(role, path, MASK_ENTITIES[role]) for role, path in case.masks.items() if role in MASK_ENTITIES]
        raters = case.extra.get("lesion_raters", {})
        lesion = case.masks.get("lesion")
        masks += [("lesion", Path(p), {"label": "lesion", "desc": f"rater{n}"}) for n, p in sorted(raters.items())
                  if Path(p) != lesion]  # fmt: skip
        for role, path, entities in masks:
            volume = read_mask(path)
            target = derivative_path(deriv, case.subject, case.session, "mask", **entities)
            write_volume(volume.with_data(volume.data.astype(np.uint8)), target)
            rows.append(_row(case.case_id, f"mask:{role}" + (f":{entities['desc']}" if "desc" in entities else ""),
                             path, target, dest, renamed.get(case.subject, "")))  # fmt: skip
    description = dataset_description(f"{src.name} imported by gdfree", "raw",
                                      GeneratedBy=[{"Name": "gdfree import", "Version": gdfree.__version__}],
                                      SourceDatasets=[{"URL": src.resolve().as_uri()}])  # fmt: skip
    write_json(dest / "dataset_description.json", description)
    write_json(dest / "derivatives" / fmt_name / "dataset_description.json",
               {**description, "DatasetType": "derivative"})  # fmt: skip
    subjects = sorted({c.subject for c in cases})
    write_tsv(dest / "participants.tsv", [{"participant_id": f"sub-{s}"} for s in subjects])
    write_tsv(dest / "import.tsv", rows)
    return rows


def _row(case_id: str, role: str, source: Path, target: Path, dest: Path, renamed_from: str = "") -> dict[str, Any]:
    return {"case": case_id, "role": role, "source": str(source.resolve()), "source_sha256": file_sha256(source),
            "destination": str(target.relative_to(dest)), "renamed_from": renamed_from}  # fmt: skip


def _renamed_view(src: Path, work: Path) -> dict[str, str]:
    """Symbolic links in ``work`` to the files of ``src``'s subject folders whose label is not BIDS
    (``sub-01_baseline``, ``Sub-02``: :func:`gdfree.io.accounting.not_cases`), under the nearest valid label
    (:func:`gdfree.io.accounting.bids_label`), in folder and file names, raw and derivatives alike; returns old
    folder name -> new one.

    Raises:
        ValueError: two folders would get the same name, or a new name is a subject folder already (both named).
    """
    from gdfree.io.accounting import bad_subject_label, bids_label

    mapping: dict[str, str] = {}
    for sub in sorted(p for p in src.iterdir() if p.is_dir() and bad_subject_label(p.name)):
        new = f"sub-{bids_label(sub.name[4:])}"
        if new == "sub-":
            continue
        clash = next((old for old, n in mapping.items() if n == new), None) or (new if (src / new).exists() else None)
        if clash is not None:
            raise ValueError(f"{src / sub.name}: its valid name {new} is also that of {src / clash}; rename one of "
                             "them by hand")  # fmt: skip
        mapping[sub.name] = new
    for old, new in mapping.items():
        for top in [src, *sorted(p for p in (src / "derivatives").glob("*") if p.is_dir())]:
            for f in sorted(p for p in (top / old).rglob("*") if p.is_file()):
                rel = [part.replace(old, new, 1) for part in f.relative_to(top / old).parts]
                link = work / top.relative_to(src) / new / Path(*rel)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(f.resolve())
    return mapping
