"""A rater's review of the derived enhancing components (``_review.tsv``: accept or reject a candidate, with the
rater and a note): read and checked (:func:`read_review`), and applied over the rules' verdicts
(:func:`apply_review`); ``prepare`` re-applies a changed review without redoing the case."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.preprocess.enhancing import EnhancingResult

__all__ = ["apply_review", "read_review"]


def read_review(path: Path | str) -> list[dict[str, str]]:
    """The rows of a reviewed-components TSV (a copy of ``*_desc-enhancing_components.tsv`` with ``decision``
    filled in by a rater: accept, reject or empty).

    Raises:
        ValueError: not a tab-separated table with x_mm, y_mm, z_mm and decision columns.
    """

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
            columns = set(rows[0]) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read the review table ({exc})") from None
    missing = {"x_mm", "y_mm", "z_mm", "decision"} - columns
    if rows and missing:
        raise ValueError(f"the review table lacks the column(s) {', '.join(sorted(missing))}")
    return rows


def apply_review(
    result: EnhancingResult, review: Sequence[Mapping[str, Any]], tolerance_mm: float = 3.0
) -> dict[str, Any]:
    """Apply a rater's decisions (rows with ``x_mm, y_mm, z_mm`` and ``decision`` accept/reject, optional
    ``rater``/``note``) to ``result`` in place: each row goes to the candidate whose centroid is nearest, within
    ``tolerance_mm`` (component numbers change when the derivation's knobs do, positions do not).

    Returns:
        {"applied": n, "unmatched": [rows that matched no candidate], "accepted": n, "rejected": n}.

    Raises:
        ValueError: a row without a position or with a decision other than accept/reject (named by its row).
    """
    centres = np.asarray([[r["x_mm"], r["y_mm"], r["z_mm"]] for r in result.components], float).reshape(-1, 3)
    applied, unmatched, counts = 0, [], {"accept": 0, "reject": 0}
    for number, row in enumerate(review, start=1):
        decision = str(row.get("decision", "")).strip().lower()
        if decision in ("", "none", "nan"):
            continue
        if decision not in ("accept", "reject"):
            raise ValueError(f"review row {number}: decision must be accept or reject, got {row.get('decision')!r}")
        try:
            where = np.asarray([float(row[a]) for a in ("x_mm", "y_mm", "z_mm")])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"review row {number}: needs numeric x_mm, y_mm, z_mm") from None
        distance = np.sqrt(((centres - where) ** 2).sum(axis=1)) if len(centres) else np.asarray([])
        if not distance.size or distance.min() > tolerance_mm:
            unmatched.append({**row, "row": number})
            continue
        comp = result.components[int(distance.argmin())]
        comp["verdict"] = "kept" if decision == "accept" else "rejected"
        who = str(row.get("rater") or "a rater")
        note = str(row.get("note") or "").strip()
        comp["reason"] = f"reviewed: {decision}ed by {who}" + (f" ({note})" if note else "")
        comp["confidence"] = 1.0
        applied += 1
        counts[decision] += 1
    keep = np.zeros(len(result.components) + 1, bool)
    keep[1:] = [r["verdict"] == "kept" for r in result.components]
    result.mask = keep[result.candidates]
    result.info["n_components"] = int(keep.sum())
    result.info["n_rejected"] = len(result.components) - int(keep.sum())
    return {"applied": applied, "unmatched": unmatched, "accepted": counts["accept"], "rejected": counts["reject"]}
