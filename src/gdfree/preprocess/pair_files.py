"""Sessions paired with their prior, written to disk (``gdfree pair``, ``gdfree predict --prior``).

Each session of a subject after its first is paired with the session before it (BIDS ``ses-*`` labels in
natural order) by :func:`gdfree.preprocess.pair.pair_exams` on the FLAIR, and three files go beside it, on the
follow-up's grid:

``sub-X_ses-Y_from-<prior>_xfm.txt``
    the rigid ITK transform from the follow-up's points to the prior's.
``sub-X_ses-Y_desc-prior_FLAIR.nii.gz``
    the prior's FLAIR registered onto the follow-up and intensity-matched.
``sub-X_ses-Y_desc-FLAIRdifference_map.nii.gz``
    the follow-up minus it, in noise units (formed halfway).

The last two are the prior-exam input channels of a model (:data:`gdfree.types.PAIR_ROLES`,
:func:`gdfree.io.bids.attach_pairs` finds them). ``OUT/pairs.tsv`` has one row a pair; a pair that cannot be made
(no FLAIR, a failed registration) is listed as failed and the others go on, and one whose correlation check
fails, or whose prior covers too little of the brain, is written with the problem in ``reason``. The brain mask is
the follow-up's own when the dataset has one, else deepbet's on its FLAIR, else Otsu's.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Collection, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.errors import GdfreeError
from gdfree.io.bids import PAIR_FILES, CaseFiles, derivative_path
from gdfree.io.images import read_mask, read_volume, write_volume
from gdfree.io.tables import write_tsv
from gdfree.types import Volume

__all__ = ["PAIR_COLUMNS", "attempt_pair", "pair_sessions", "session_brain", "transform_path", "write_pair",
           "write_pairs"]  # fmt: skip

PAIR_COLUMNS = ("subject", "prior", "followup", "correlation", "coverage", "status", "reason")


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


def session_brain(volume: Volume, provided: Path | None) -> np.ndarray:
    """The follow-up's own brain mask when the dataset has one (as ``prepare``'s policy), else deepbet's on its
    FLAIR (good on FLAIR with or without skull), else Otsu's when deepbet is not installed.

    Raises:
        GdfreeError: the provided mask is not on the FLAIR's grid.
    """
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


def transform_path(out: Path | str, prior: CaseFiles, followup: CaseFiles) -> Path:
    """Where :func:`write_pair` puts the follow-up -> prior transform."""
    return derivative_path(out, followup.subject, followup.session, "xfm", ".txt", **{"from": str(prior.session)})


def write_pair(prior: CaseFiles, followup: CaseFiles, out: Path | str) -> dict[str, Any]:
    """Pair one follow-up with its prior and write the module docstring's files; returns the pair's
    correlation, the share of the brain the prior covers (``coverage``) and problems (``reason``).

    Raises:
        GdfreeError: a session has no FLAIR, or the provided brain mask is off the FLAIR's grid.
    """
    from gdfree.preprocess.pair import pair_exams
    from gdfree.preprocess.registration import write_transform

    for case in (prior, followup):
        if "FLAIR" not in case.images:
            raise GdfreeError(f"{case.case_id}: no FLAIR to compare sessions on")
    fu = read_volume(followup.images["FLAIR"])
    brain = session_brain(fu, followup.masks.get("brain"))
    paired = pair_exams({"FLAIR": fu}, {"FLAIR": read_volume(prior.images["FLAIR"])}, brain)
    sub, ses = followup.subject, followup.session
    write_transform(paired.transform, transform_path(out, prior, followup))
    images = {"priorFLAIR": paired.prior["FLAIR"], "diffFLAIR": paired.difference["FLAIR"]}
    for role, (suffix, desc) in PAIR_FILES.items():
        write_volume(fu.with_data(images[role].data), derivative_path(out, sub, ses, suffix, desc=desc))
    return {"correlation": round(paired.correlation, 3), "coverage": round(paired.coverage, 3), "status": "ok",
            "reason": "; ".join(paired.problems)}


def attempt_pair(row: dict[str, Any], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``row`` updated with what ``work()`` returns, or with ``status`` failed and the reason when it fails as a pair
    can (bad input, a failed registration, a missing file): the other pairs go on."""
    try:
        row.update(work())
    except (GdfreeError, ValueError, RuntimeError, OSError) as exc:
        row.update(status="failed", reason=str(exc))
    return row


def write_pairs(
    out: Path | str, cases: Sequence[CaseFiles], followups: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """:func:`write_pair` for every pair of ``cases`` (those whose follow-up's case id is in ``followups`` when
    given: a shard) into ``out``, and ``out/pairs.tsv``; returns its rows. A pair that fails gets ``status`` failed
    and its ``reason``; the others go on."""
    out = Path(out)
    rows = []
    for prior, followup in pair_sessions(cases):
        if followups is not None and followup.case_id not in followups:
            continue
        row = {"subject": followup.subject, "prior": prior.session, "followup": followup.session}
        rows.append(attempt_pair(row, partial(write_pair, prior, followup, out)))
    if rows:
        write_tsv(out / "pairs.tsv", rows, list(PAIR_COLUMNS))
    return rows
