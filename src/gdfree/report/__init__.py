"""HTML reports (``gdfree report``): a page per case and a cohort page, offline, with a NiiVue viewer.

A report is a folder that opens from disk (``file://``) with no server and no network::

    REPORT/index.html          cohort page: headline, FROC / ROC / calibration / retention, per-patient table
    REPORT/<case>.html         case page: activity score, viewer, lesion tables, mosaics, explain, input QC
    REPORT/<case>/             the case page's pictures and viewer data
    REPORT/cohort/             the cohort page's pictures
    REPORT/assets/             report.css, report.js, niivue.umd.js

Every string from files and metadata is escaped (Jinja2 autoescaping; JSON for scripts with ``<`` escaped):
an id holding markup is shown, never run. Inputs are only read. A case whose report fails is listed on the
cohort page and the others go on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ReportResult", "case_slug", "write_reports"]


@dataclass
class ReportResult:
    """What :func:`write_reports` wrote: the cohort page, case id -> case page, and case id -> why it failed (no
    page) or what its page lacks (outputs of predict gone or changed since)."""

    index: Path
    cases: dict[str, Path] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def case_slug(case_id: str) -> str:
    """A file name for a case's page: the id when it is plain (letters, digits, ``-_.``), else the id with
    every other character replaced by ``_`` and a short hash (two ids never share a page)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", case_id).strip(".") or "case"
    if clean == case_id:
        return case_id
    return f"{clean[:60]}-{hashlib.sha256(case_id.encode()).hexdigest()[:8]}"


def _inputs(
    predictions: Path | str | None,
    dataset: Path | str | None,
    evaluation: Path | str | None,
    explain: Path | str | None,
) -> dict[str, Path]:
    """The report's input folders by role; ``predictions`` and ``dataset`` default to those the evaluation's
    summary names. Raises GdfreeError for a missing folder or an incomplete pairing."""
    from gdfree.errors import GdfreeError
    from gdfree.report.cohort import read_summary

    paths = {k: Path(v) for k, v in (("predictions", predictions), ("dataset", dataset), ("evaluation", evaluation),
                                      ("explain", explain)) if v is not None}  # fmt: skip
    for key, path in paths.items():
        if not path.is_dir():
            raise GdfreeError(f"{path}: the {key} folder does not exist")
    if "evaluation" in paths:
        provenance = read_summary(paths["evaluation"]).get("provenance", {})
        for key, name in (("predictions", "predictions"), ("dataset", "reference")):
            if key not in paths and provenance.get(name) and Path(provenance[name]).is_dir():
                paths[key] = Path(provenance[name])
    if not paths:
        raise GdfreeError("report: give --predictions with --input, or --evaluation")
    if ("predictions" in paths) != ("dataset" in paths):
        raise GdfreeError(
            "report: --predictions and --input go together (the predictions and the images they came from)"
        )
    return paths


def _paired_cases(
    predictions: Path, dataset: Path, fmt: str, by_id: dict[str, Any], case_ids: Sequence[str] | None,
    failures: dict[str, str],
) -> list[Any]:  # fmt: skip
    """The cases of ``dataset`` that ``predictions`` holds, checked to be the images they were predicted from
    (:func:`gdfree.io.pairing.check_pairing`); predicted cases not in ``dataset`` go to ``failures``.

    Raises:
        PairingError: none of the predicted cases is in ``dataset``, or one was predicted from other images.
    """
    from gdfree.io.adapters import discover
    from gdfree.io.pairing import PairingError, check_pairing

    predicted = [c for c in discover(dataset, fmt) if c.case_id in by_id and c.images]
    if by_id and not predicted:
        raise PairingError(f"{predictions}: none of its {len(by_id)} predicted cases is in {dataset} (--input); "
                           "give the folder they were predicted from")  # fmt: skip
    check_pairing(predictions, dataset, predicted, "--input")
    for case_id in sorted(set(by_id) - {c.case_id for c in predicted}):  # listed, not skipped in silence
        if case_ids is None or case_id in case_ids:
            failures[case_id] = f"predicted but not found in {dataset} (--input): no page"
    return predicted


def write_reports(
    out: Path | str,
    *,
    predictions: Path | str | None = None,
    dataset: Path | str | None = None,
    evaluation: Path | str | None = None,
    explain: Path | str | None = None,
    case_ids: Sequence[str] | None = None,
    fmt: str = "auto",
    viewer: bool = True,
    progress: Callable[[str, str], None] | None = None,
) -> ReportResult:
    """Write the cohort page and one page per predicted case into ``out``.

    Args:
        predictions: a ``gdfree predict`` folder; with ``dataset`` (its input) every case in it gets a page.
        evaluation: a ``gdfree evaluate`` folder for the cohort page's curves; ``predictions`` and
            ``dataset`` default to the folders its summary.json names.
        explain: a ``gdfree explain`` folder (importance and attribution pictures on the case pages).
        case_ids: only these cases get pages (default: every predicted case).
        viewer: embed the NiiVue viewer (needs the bundled NiiVue, see :func:`gdfree.report.viewer.niivue_asset`).
        progress: called with (case id, "written" or "failed: ...") after each case.

    Raises:
        GdfreeError: ``out`` is inside an input folder or holds files no earlier report wrote, an input is not
            what it should be, the predictions were not made from ``dataset``'s images
            (:class:`gdfree.io.pairing.PairingError`), or NiiVue is missing.
    """
    from gdfree.errors import GdfreeError
    from gdfree.io.cohort import select
    from gdfree.io.owned import claim_folder, mark_folder
    from gdfree.io.pairing import changed_outputs
    from gdfree.io.runs import check_output_folder, finished_records
    from gdfree.report.case import read_rows, write_case_report
    from gdfree.report.cohort import write_cohort_report
    from gdfree.report.render import copy_assets

    out = Path(out)
    paths = _inputs(predictions, dataset, evaluation, explain)
    check_output_folder(out, list(paths.values()))
    rows: list[dict[str, Any]] = []
    result = ReportResult(index=out / "index.html")
    cases: list[Any] = []
    if "predictions" in paths:  # every input checked before the folder is claimed (an earlier report kept)
        if not (paths["predictions"] / "predictions.tsv").is_file():
            raise GdfreeError(f"{paths['predictions']}: not a gdfree predict folder (no predictions.tsv)")
        rows = read_rows(paths["predictions"] / "predictions.tsv")
        by_id = {r["case_id"]: r for r in rows}
        for r in read_rows(paths["predictions"] / "failures.tsv"):  # cases predict could not do: listed too
            if case_ids is None or r.get("case_id") in case_ids:
                result.failures[r.get("case_id", "?")] = f"predict failed: {r.get('reason', '')}"
        predicted = _paired_cases(paths["predictions"], paths["dataset"], fmt, by_id, case_ids, result.failures)
        cases = select(predicted, case_ids, where=f"{paths['predictions']} (predicted cases)") if predicted else []
    foreign = claim_folder(out, "report")  # an earlier report's pages go: no orphans
    copy_assets(out, viewer)
    if "predictions" in paths:
        records = finished_records(paths["predictions"])
        for files in cases:
            slug = case_slug(files.case_id)
            try:
                changed = changed_outputs(paths["predictions"], records.get(files.case_id))  # said on its page
                result.cases[files.case_id] = write_case_report(
                    paths["predictions"], files, out, row=by_id.get(files.case_id), explain=paths.get("explain"),
                    viewer=viewer, cohort_link="index.html", slug=slug, problems=changed)  # fmt: skip
                status = "written"
                if changed:
                    result.failures[files.case_id] = "page written, but predict's outputs are incomplete: " + (
                        "; ".join(changed))
                    status = f"written, with {len(changed)} missing or changed outputs"
            except (GdfreeError, ValueError, OSError, MemoryError, RuntimeError) as exc:
                result.failures[files.case_id] = str(exc)
                status = f"failed: {exc}"
            if progress is not None:
                progress(files.case_id, status)
    pages = {case_id: path.name for case_id, path in result.cases.items()}
    write_cohort_report(out, evaluation=paths.get("evaluation"), predictions=rows, case_pages=pages,
                        failures=result.failures)  # fmt: skip
    mark_folder(out, "report", foreign)
    return result
