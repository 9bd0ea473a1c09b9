"""``gdfree import``: copy any dataset :func:`~gdfree.io.adapters.discover` reads into a BIDS dataset.

Images become ``DEST/sub-X/[ses-Y/]anat/sub-X[_ses-Y]_<suffix>.nii.gz`` (post-Gd T1w: ``ce-gadolinium_T1w``;
NRRD/MHA converted to NIfTI with the same voxels and physical placement); masks become binary uint8
``DEST/derivatives/<format>/sub-X/.../*_{label-lesion,label-enhancing,desc-brain}_mask.nii.gz``, other raters'
lesion masks ``*_label-lesion_desc-raterN_mask.nii.gz``. ``DEST/import.tsv`` lists every source file, its
SHA-256 and where it went. The source is only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import gdfree
from gdfree.io.bids import MASK_ENTITIES, bids_name, dataset_description, derivative_path, image_entities
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
    cases = discover(src, fmt)
    fmt_name = fmt if fmt != "auto" else (cases[0].source.split(":")[0] if cases else "import")
    rows: list[dict[str, Any]] = []
    for case in cases:
        ses = {"ses": case.session} if case.session else {}
        folder = dest / f"sub-{case.subject}" / (f"ses-{case.session}" if case.session else "") / "anat"
        for role, path in case.images.items():
            entities, suffix = image_entities(role)
            target = folder / bids_name({"sub": case.subject, **ses, **entities}, suffix)
            write_volume(read_volume(path), target)
            rows.append(_row(case.case_id, role, path, target, dest))
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
                             path, target, dest))  # fmt: skip
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


def _row(case_id: str, role: str, source: Path, target: Path, dest: Path) -> dict[str, Any]:
    return {"case": case_id, "role": role, "source": str(source), "source_sha256": file_sha256(source),
            "destination": str(target.relative_to(dest))}  # fmt: skip
