"""Predictions and the images they were made from belong together (issue 33: pairings never checked).

A ``gdfree predict`` folder keeps, per case, the SHA-256 of every input file the network read
(``gdfree_run/<case>.json``, :mod:`gdfree.io.runs`). :func:`check_pairing` compares them with the files of the
same case in the folder a command is given as the predictions' inputs (``report --input``, ``to-native
--prepared``): a case whose recorded inputs are not among that folder's files for it was predicted from another
dataset, or its images changed since, and drawing or resampling its maps there would look right and be wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gdfree.errors import GdfreeError
from gdfree.io.bids import CaseFiles, attach_pairs
from gdfree.io.images import file_sha256
from gdfree.io.runs import CaseRecord, finished_records

__all__ = ["PairingError", "changed_outputs", "check_pairing", "predicted_inputs"]


class PairingError(GdfreeError, ValueError):
    """Predictions given with images (or a prepare output) they were not made from."""


def predicted_inputs(predictions: Path | str) -> dict[str, tuple[str, ...]]:
    """case id -> the SHA-256 of the input files ``gdfree predict`` read for it (its finished cases' records)."""
    return {k: r.inputs for k, r in finished_records(Path(predictions)).items() if r.inputs}


def check_pairing(predictions: Path | str, dataset: Path | str, cases: Iterable[CaseFiles], option: str) -> int:
    """Check that every case of ``cases`` (from ``dataset``) that ``predictions`` holds a record of was predicted
    from that case's files (and the prior-exam images ``predict --prior`` wrote beside it); returns how many were
    checked.

    Raises:
        PairingError: naming both folders, ``option`` (the command's option for ``dataset``) and the cases whose
            recorded inputs are not files of ``dataset``.
    """
    recorded = predicted_inputs(predictions)
    checked, wrong = 0, []
    for case in attach_pairs(cases, predictions):  # ``predict --prior`` writes the prior-exam inputs it read there
        inputs = recorded.get(case.case_id)
        if not inputs:
            continue
        checked += 1
        if not set(inputs) <= {file_sha256(p) for p in case.images.values()}:
            wrong.append(case.case_id)
    if wrong:
        raise PairingError(
            f"{predictions} was not predicted from {dataset} ({option}): the input files recorded for "
            f"{', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''} ({len(wrong)} of {checked} cases) are not "
            f"{dataset}'s files of those cases (another dataset, or images changed since); give {option} the "
            "folder the predictions were made from"
        )
    return checked


def changed_outputs(predictions: Path | str, record: CaseRecord | None) -> list[str]:
    """The files a case's ``record`` (:func:`gdfree.io.runs.finished_records`) says ``gdfree predict`` wrote into
    ``predictions`` that are gone or changed since (SHA-256), as "<path> (missing)" / "<path> (changed ...)"; []
    when none, or without a record."""
    found = []
    for rel, sha in sorted(record.outputs.items() if record is not None else []):
        file = Path(predictions) / rel
        if ".." in Path(rel).parts:  # a record names files inside its folder only
            continue
        if not file.is_file():
            found.append(f"{rel} (missing)")
        elif file_sha256(file) != sha:
            found.append(f"{rel} (changed since predict wrote it)")
    return found
