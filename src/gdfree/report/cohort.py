"""The cohort report: an ``evaluate`` folder's curves and per-patient table, with links to the case reports.

``REPORT/index.html`` and its pictures in ``REPORT/cohort/`` (froc.png, roc.png, calibration.png,
retention.png); the evaluation's TSV files are linked where they are, never copied or changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.errors import GdfreeError
from gdfree.report import figures
from gdfree.report.case import read_rows
from gdfree.report.render import fmt, render_page

__all__ = ["read_summary", "roc_band", "write_cohort_report"]

TABLES = ("cases.tsv", "lesions.tsv", "by_volume.tsv", "froc.tsv", "reliability.tsv", "patient_roc.tsv",
          "retention.tsv", "failures.tsv", "summary.json")  # fmt: skip


def roc_band(
    labels: np.ndarray, scores: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Pointwise bootstrap band of the patient ROC: resample patients (stratified: each class resampled
    within itself, so every resample has both), take each resample's sensitivity at 101 false-positive
    rates (the ROC's step value there) and the central ``level`` interval. None without both classes.

    Returns:
        (false-positive-rate grid, low, high), each of shape (101,).
    """
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return None
    grid = np.linspace(0, 1, 101)
    rng = np.random.default_rng(seed)
    curves = np.empty((n_boot, grid.size))
    for b in range(n_boot):
        p = rng.choice(pos, len(pos))
        n = rng.choice(neg, len(neg))
        thresholds = np.unique(np.concatenate([p, n, [np.inf]]))[::-1]
        fpr = (n[None, :] >= thresholds[:, None]).mean(axis=1)
        tpr = (p[None, :] >= thresholds[:, None]).mean(axis=1)
        # the highest sensitivity reached at or below each false-positive rate (the step ROC's value)
        idx = np.searchsorted(fpr, grid, side="right") - 1
        curves[b] = tpr[np.clip(idx, 0, None)]
    tail = 50 * (1 - level)
    low, high = np.percentile(curves, [tail, 100 - tail], axis=0)
    return grid, low, high


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def _curves(
    evaluation: Path, summary: Mapping[str, Any], cases: Sequence[dict[str, str]], folder: Path
) -> dict[str, str]:
    written = {}
    if "froc" in summary:
        f = summary["froc"]
        figures.froc_png(
            folder / "froc.png", f["fp_per_scan"], f["sensitivity"], summary["config"].get("fp_per_scan", [])
        )
        written["froc"] = "froc.png"
    patient = summary.get("patient", {})
    if patient.get("roc_curve"):
        scored = [r for r in cases if r.get("patient_score") not in (None, "", "n/a", "nan")]
        labels = np.array([r.get("active", "").lower() == "true" for r in scored])
        scores = np.array([float(r["patient_score"]) for r in scored])
        band = roc_band(labels, scores, n_boot=int(patient.get("n_boot", 2000)), seed=int(patient.get("seed", 0)))
        fpr = np.array([float(p["fpr"]) for p in patient["roc_curve"]])
        tpr = np.array([float(p["tpr"]) for p in patient["roc_curve"]])
        ci = patient.get("auc_ci") or [None, None]
        text = f"AUC {fmt(patient.get('auc'))} [{fmt(ci[0])}, {fmt(ci[1])}]"
        figures.roc_png(folder / "roc.png", fpr, tpr, band, text)
        written["roc"] = "roc.png"
    if (evaluation / "reliability.tsv").is_file():
        figures.calibration_png(folder / "calibration.png", read_rows(evaluation / "reliability.tsv"))
        written["calibration"] = "calibration.png"
    retention = read_rows(evaluation / "retention.tsv")
    if retention:
        by_case: dict[str, list[tuple[float, float]]] = {}
        for r in retention:
            by_case.setdefault(r["case_id"], []).append((float(r["fraction"]), float(r["ndsc"])))
        fractions = np.array([f for f, _ in next(iter(by_case.values()))])
        curves = {k: np.array([v for _, v in pts]) for k, pts in by_case.items() if len(pts) == len(fractions)}
        figures.retention_png(folder / "retention.png", fractions, curves)
        written["retention"] = "retention.png"
    return written


def read_summary(evaluation: Path) -> dict[str, Any]:
    path = evaluation / "summary.json"
    if not path.is_file():
        raise GdfreeError(f"{evaluation}: not a gdfree evaluate folder (no summary.json)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GdfreeError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(summary, dict) or "n_cases" not in summary:
        raise GdfreeError(f"{path}: not a gdfree evaluation summary (no n_cases)")
    return summary


def write_cohort_report(
    report: Path,
    *,
    evaluation: Path | None = None,
    predictions: Sequence[dict[str, Any]] = (),
    case_pages: Mapping[str, str] | None = None,
    failures: Mapping[str, str] | None = None,
    title: str = "Cohort",
) -> Path:
    """Write ``report/index.html``: the evaluation's headline, curves and per-patient table (when
    ``evaluation`` is an evaluate folder), the prediction rows (``predictions.tsv``), links to ``case_pages``
    (case id -> relative link) and the cases whose report failed.

    Raises:
        GdfreeError: ``evaluation`` is not a readable evaluate folder.
    """
    from gdfree.evaluate.display import headline

    folder = report / "cohort"
    folder.mkdir(parents=True, exist_ok=True)
    summary, cases, curves, tables, rows = {}, [], {}, [], []
    if evaluation is not None:
        summary = read_summary(evaluation)
        cases = read_rows(evaluation / "cases.tsv")
        curves = _curves(evaluation, summary, cases, folder)
        tables = [{"name": n, "href": _relative(evaluation / n, report)} for n in TABLES if (evaluation / n).is_file()]
        rows = [{"metric": m, "value": v, "how": h} for m, v, h in headline(summary)]
    predicted = {str(r.get("case_id")): dict(r) for r in predictions}
    patients = []
    for case_id in sorted(set(predicted) | {r["case_id"] for r in cases}):
        merged: dict[str, Any] = {
            **predicted.get(case_id, {}),
            **next((r for r in cases if r["case_id"] == case_id), {}),
        }
        merged["case_id"] = case_id
        merged["page"] = (case_pages or {}).get(case_id)
        patients.append(merged)
    return render_page(
        "cohort.html.j2",
        report / "index.html",
        title=title,
        evaluation=str(evaluation) if evaluation is not None else None,
        headline=rows,
        curves=curves,
        tables=tables,
        patients=patients,
        failures=sorted((failures or {}).items()),
        notes=summary.get("notes", []),
        n_cases=summary.get("n_cases", len(patients)),
    )
