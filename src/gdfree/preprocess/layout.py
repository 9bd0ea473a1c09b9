"""Where ``prepare`` puts its records: the pipeline's derivatives folder, each case's ``_prepare.json`` record and
the rater's ``_review.tsv`` beside it, and the transforms; shared by the pipeline, the enhancing labels and the
native-grid export."""

from __future__ import annotations

from pathlib import Path

from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.types import POST_CONTRAST

__all__ = ["PIPELINE", "record_path", "review_path", "xfm_path"]


PIPELINE = "gdfree-prepare"


def xfm_path(deriv: Path, case: CaseFiles, role: str, reference: str) -> Path:
    ent = {"from": role if role != POST_CONTRAST else "T1gd", "to": reference, "mode": "image"}
    return derivative_path(deriv, case.subject, case.session, "xfm", ".txt", **ent)


def record_path(out: Path, case: CaseFiles) -> Path:
    return derivative_path(out / "derivatives" / PIPELINE, case.subject, case.session, "prepare", ".json")


def review_path(out: Path, case: CaseFiles) -> Path:
    return derivative_path(out / "derivatives" / PIPELINE, case.subject, case.session, "review", ".tsv",
                           desc="enhancing")  # fmt: skip
