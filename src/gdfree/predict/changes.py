"""Activity against a prior exam (``gdfree predict --prior``): after every session is predicted, each follow-up
session of a subject is paired with the session before it (BIDS ``ses-*`` labels in natural order), and what
changed is written beside the follow-up's predictions, on its grid:

``sub-X_ses-Y_from-<prior>_xfm.txt``
    the rigid ITK transform from the follow-up's points to the prior's (:func:`gdfree.preprocess.pair.pair_exams`).
``sub-X_ses-Y_desc-prior_FLAIR.nii.gz``, ``sub-X_ses-Y_desc-FLAIRdifference_map.nii.gz``
    the prior's FLAIR registered onto the follow-up and intensity-matched; the follow-up minus it, in noise units
    (``gdfree report`` shows both beside the follow-up).
``sub-X_ses-Y_desc-subtraction_mask.nii.gz``
    the subtraction baseline's components (:func:`gdfree.activity.change.subtraction_lesions` at ``k``, inside
    the follow-up's FLAIR hyperintensities away from the brain's edge).
``sub-X_ses-Y_desc-change_dseg.nii.gz`` and ``sub-X_ses-Y_changes.tsv``
    each lesion of the follow-up's predicted lesion mask, with the prior's predicted lesions brought onto the
    follow-up grid, called new (1), enlarging (2), stable (3) or shrinking (4) by
    :func:`gdfree.activity.change.lesion_changes`; the table adds its volume, the prior's, the change, the
    highest FLAIR difference in it, whether the subtraction found it, and its centroid (mm).

``OUT/pairs.tsv`` has one row a pair (its correlation check, counts, and ``status``/``reason``): a pair that
cannot be made (no FLAIR, a failed registration, a session that was not predicted) is listed and the others go
on; a registration whose check fails is written but flagged in ``reason``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.activity.change import SUBTRACTION_K, hyperintense_region, lesion_changes, subtraction_lesions
from gdfree.errors import GdfreeError
from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.io.colours import Label, mask_labels, write_colour_tables
from gdfree.io.images import read_mask, read_volume, write_volume
from gdfree.io.tables import write_tsv

__all__ = ["CHANGE_COLUMNS", "pair_sessions", "write_changes"]

CHANGE_COLUMNS = ("lesion_id", "status", "volume_mm3", "prior_volume_mm3", "volume_change_mm3", "subtraction_max_z",
                  "subtraction_new", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")  # fmt: skip
PAIR_COLUMNS = ("subject", "prior", "followup", "correlation", "n_lesions", "n_new", "n_enlarging", "n_subtraction",
                "status", "reason")  # fmt: skip
STATUS_LABELS = [Label(1, "new lesion", (230, 30, 30)), Label(2, "enlarging lesion", (255, 150, 0)),
                 Label(3, "stable lesion", (0, 200, 230)), Label(4, "shrinking lesion", (120, 120, 255))]  # fmt: skip
_CODES = {label.name.split()[0]: label.index for label in STATUS_LABELS}


def _natural(label: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label)]


def pair_sessions(cases: Sequence[CaseFiles]) -> list[tuple[CaseFiles, CaseFiles]]:
    """(prior, follow-up) for each session of a subject after its first, sessions in natural order."""
    by_subject: dict[str, list[CaseFiles]] = {}
    for case in cases:
        if case.session:
            by_subject.setdefault(case.subject, []).append(case)
    pairs = []
    for sessions in by_subject.values():
        ordered = sorted(sessions, key=lambda c: _natural(str(c.session)))
        pairs += list(itertools.pairwise(ordered))
    return pairs


def _one_pair(prior: CaseFiles, followup: CaseFiles, out: Path, k: float) -> dict[str, Any]:
    from gdfree.io.images import from_sitk, to_sitk
    from gdfree.preprocess.pair import pair_exams
    from gdfree.preprocess.registration import resample, write_transform

    for case in (prior, followup):
        if "FLAIR" not in case.images:
            raise GdfreeError(f"{case.case_id}: no FLAIR to compare sessions on")
    fu = read_volume(followup.images["FLAIR"])
    brain = _brain(fu, followup.masks.get("brain"))
    paired = pair_exams({"FLAIR": fu}, {"FLAIR": read_volume(prior.images["FLAIR"])}, brain)
    sub, ses = followup.subject, followup.session
    spacing = fu.spacing_mm
    write_transform(paired.transform, derivative_path(out, sub, ses, "xfm", ".txt", **{"from": str(prior.session)}))
    z = paired.difference["FLAIR"].data
    write_volume(fu.with_data(z), derivative_path(out, sub, ses, "map", desc="FLAIRdifference"))
    write_volume(paired.prior["FLAIR"], derivative_path(out, sub, ses, "FLAIR", desc="prior"))
    region = hyperintense_region(fu.data, brain, spacing)
    labels, n_sub = subtraction_lesions(z, region, k, spacing)
    found = labels > 0
    path = write_volume(fu.with_data(found.astype(np.uint8)),
                        derivative_path(out, sub, ses, "mask", desc="subtraction"))  # fmt: skip
    write_colour_tables(path, mask_labels("new (subtraction)"))
    masks = {s: derivative_path(out, c.subject, c.session, "mask", desc="lesion") for s, c in (("prior", prior),
                                                                                              ("followup", followup))}
    for name, mask in masks.items():
        if not mask.is_file():
            raise GdfreeError(f"{name} session has no predicted lesion mask ({mask.name}): was it predicted?")
    before = from_sitk(resample(to_sitk(read_mask(masks["prior"])), to_sitk(fu), paired.transform,
                                interpolation="nearest")).data > 0  # fmt: skip
    ids, rows = lesion_changes(read_mask(masks["followup"]).data, before, spacing)
    status = np.zeros(ids.shape, np.uint8)
    for row in rows:
        inside = ids == row["id"]
        status[inside] = _CODES[row["status"]]
        row["lesion_id"] = row.pop("id")
        row["subtraction_max_z"] = round(float(z[inside].max()), 3)
        row["subtraction_new"] = bool(found[inside].any())
        centre = fu.affine[:3, :3] @ np.argwhere(inside).mean(axis=0) + fu.affine[:3, 3]
        row.update({f"centroid_{a}_mm": round(float(v), 2) for a, v in zip("xyz", centre, strict=True)})
    path = write_volume(fu.with_data(status), derivative_path(out, sub, ses, "dseg", desc="change"))
    write_colour_tables(path, STATUS_LABELS)
    write_tsv(derivative_path(out, sub, ses, "changes", ".tsv"), rows, list(CHANGE_COLUMNS))
    return {"correlation": round(paired.correlation, 3), "n_lesions": len(rows),
            "n_new": sum(r["status"] == "new" for r in rows),
            "n_enlarging": sum(r["status"] == "enlarging" for r in rows),
            "n_subtraction": n_sub, "status": "ok", "reason": "; ".join(paired.problems)}  # fmt: skip


def _brain(volume: Any, provided: Path | None) -> np.ndarray:
    """The follow-up's own brain mask when the dataset has one (as ``prepare``'s policy), else deepbet's on its
    FLAIR (good on FLAIR with or without skull), else Otsu's when deepbet is not installed."""
    from gdfree.preprocess.brain import BrainExtractionUnavailable, learned_brain_mask
    from gdfree.preprocess.pair import otsu_brain

    if provided is not None:
        mask = read_mask(provided)
        if mask.shape != volume.shape or not np.allclose(mask.affine, volume.affine, atol=1e-3):
            raise GdfreeError(f"{provided}: the brain mask is not on the grid of {volume.path}")
        return np.asarray(mask.data, bool)
    try:
        return learned_brain_mask(volume)
    except BrainExtractionUnavailable:
        return otsu_brain(volume.data)


def write_changes(out: Path | str, cases: Sequence[CaseFiles], k: float = SUBTRACTION_K) -> list[dict[str, Any]]:
    """Pair the predicted sessions of ``cases`` and write what changed (module docstring); returns pairs.tsv's
    rows. A pair that fails gets ``status`` failed and its ``reason``; the others go on."""
    out = Path(out)
    rows = []
    for prior, followup in pair_sessions(cases):
        row: dict[str, Any] = {"subject": followup.subject, "prior": prior.session, "followup": followup.session}
        try:
            row.update(_one_pair(prior, followup, out, k))
        except (GdfreeError, ValueError, RuntimeError, OSError) as exc:
            row.update(status="failed", reason=str(exc))
        rows.append(row)
    if rows:
        write_tsv(out / "pairs.tsv", rows, list(PAIR_COLUMNS))
    return rows
