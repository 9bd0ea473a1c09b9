"""Activity against a prior exam (``gdfree predict --prior``): each follow-up session of a subject is paired with
the session before it before anything is predicted (:mod:`gdfree.preprocess.pair_files`: the transform, the
registered prior FLAIR and the FLAIR difference, which a model with prior-exam channels reads as inputs), and
after every session is predicted, what changed is written beside the follow-up's predictions, on its grid:

``sub-X_ses-Y_desc-subtraction_mask.nii.gz``
    the subtraction baseline's components (:func:`gdfree.activity.change.subtraction_lesions` at ``k``, inside
    the follow-up's FLAIR hyperintensities away from the brain's edge).
``sub-X_ses-Y_desc-change_dseg.nii.gz`` and ``sub-X_ses-Y_changes.tsv``
    each lesion of the follow-up's predicted lesion mask, with the prior's predicted lesions brought onto the
    follow-up grid, called new (1), enlarging (2), stable (3) or shrinking (4) by
    :func:`gdfree.activity.change.lesion_changes`; the table adds its volume, the prior's, the change, the
    highest FLAIR difference in it, whether the subtraction found it, the highest ``new`` probability of a model
    with that head (``p_new``), and its centroid (mm).

``OUT/pairs.tsv`` has one row a pair (its correlation check, the share of the brain the prior covers, counts, and
``status``/``reason``; outside the prior's field of view a lesion reads as it is, neither new nor changed): a pair that
cannot be made (no FLAIR, a failed registration, a session that was not predicted) is listed and the others go
on; a registration whose check fails is written but flagged in ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.activity.change import SUBTRACTION_K, hyperintense_region, lesion_changes, subtraction_lesions
from gdfree.errors import GdfreeError
from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.io.colours import Label, mask_labels, write_colour_tables
from gdfree.io.images import read_mask, read_volume, write_volume
from gdfree.io.tables import write_tsv
from gdfree.preprocess.pair_files import attempt_pair, session_brain, transform_path

__all__ = ["CHANGE_COLUMNS", "write_changes"]

CHANGE_COLUMNS = ("lesion_id", "status", "volume_mm3", "prior_volume_mm3", "volume_change_mm3", "subtraction_max_z",
                  "subtraction_new", "p_new", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm")  # fmt: skip
PAIR_COLUMNS = ("subject", "prior", "followup", "correlation", "coverage", "n_lesions", "n_new", "n_enlarging",
                "n_subtraction", "status", "reason")  # fmt: skip
STATUS_LABELS = [Label(1, "new lesion", (230, 30, 30)), Label(2, "enlarging lesion", (255, 150, 0)),
                 Label(3, "stable lesion", (0, 200, 230)), Label(4, "shrinking lesion", (120, 120, 255))]  # fmt: skip
_CODES = {label.name.split()[0]: label.index for label in STATUS_LABELS}


def _one_pair(prior: CaseFiles, followup: CaseFiles, out: Path, k: float) -> dict[str, Any]:
    from gdfree.io.images import from_sitk, to_sitk
    from gdfree.preprocess.pair import prior_coverage
    from gdfree.preprocess.registration import read_transform, resample

    fu = read_volume(followup.images["FLAIR"])
    brain = session_brain(fu, followup.masks.get("brain"))
    sub, ses = followup.subject, followup.session
    spacing = fu.spacing_mm
    z = read_volume(derivative_path(out, sub, ses, "map", desc="FLAIRdifference")).data
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
    transform = read_transform(transform_path(out, prior, followup))
    before = from_sitk(resample(to_sitk(read_mask(masks["prior"])), to_sitk(fu), transform,
                                interpolation="nearest")).data > 0  # fmt: skip
    after = read_mask(masks["followup"]).data > 0
    # outside the prior's field of view nothing is known: read "no change" there, as the pair's images do
    before = np.where(prior_coverage(read_volume(prior.images["FLAIR"]), fu, transform), before, after)
    new_prob = derivative_path(out, sub, ses, "probseg", desc="new")
    p_new = read_volume(new_prob).data if new_prob.is_file() else None
    ids, rows = lesion_changes(after, before, spacing)
    status = np.zeros(ids.shape, np.uint8)
    for row in rows:
        inside = ids == row["id"]
        status[inside] = _CODES[row["status"]]
        row["lesion_id"] = row.pop("id")
        row["subtraction_max_z"] = round(float(z[inside].max()), 3)
        row["subtraction_new"] = bool(found[inside].any())
        row["p_new"] = round(float(p_new[inside].max()), 4) if p_new is not None else math.nan
        centre = fu.affine[:3, :3] @ np.argwhere(inside).mean(axis=0) + fu.affine[:3, 3]
        row.update({f"centroid_{a}_mm": round(float(v), 2) for a, v in zip("xyz", centre, strict=True)})
    path = write_volume(fu.with_data(status), derivative_path(out, sub, ses, "dseg", desc="change"))
    write_colour_tables(path, STATUS_LABELS)
    write_tsv(derivative_path(out, sub, ses, "changes", ".tsv"), rows, list(CHANGE_COLUMNS))
    return {"n_lesions": len(rows), "n_new": sum(r["status"] == "new" for r in rows),
            "n_enlarging": sum(r["status"] == "enlarging" for r in rows), "n_subtraction": n_sub}  # fmt: skip


def write_changes(
    out: Path | str, cases: Sequence[CaseFiles], pairs: Sequence[dict[str, Any]], k: float = SUBTRACTION_K
) -> list[dict[str, Any]]:
    """What changed in every pair of ``pairs`` (the rows :func:`gdfree.preprocess.pair_files.write_pairs` returned
    for ``cases`` into ``out``, before prediction; module docstring); writes and returns pairs.tsv's rows, a pair
    that failed here or there with ``status`` failed and its ``reason``."""
    out = Path(out)
    by_key = {(c.subject, c.session): c for c in cases}
    rows = []
    for pair in pairs:
        row = dict(pair)
        if row.get("status") == "ok":
            prior, followup = by_key[(row["subject"], row["prior"])], by_key[(row["subject"], row["followup"])]
            attempt_pair(row, partial(_one_pair, prior, followup, out, k))
        rows.append(row)
    if rows:
        write_tsv(out / "pairs.tsv", rows, list(PAIR_COLUMNS))
    return rows
