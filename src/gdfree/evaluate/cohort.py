"""All metrics of one case from arrays (:func:`evaluate_case`) and of a cohort from the cases (:func:`summarize`).

Cohort numbers come in two kinds, both labelled: ``mean``/``median`` over cases of a per-case metric
(cases where it is NaN are left out and counted), and ``pooled`` lesion counts (sum of detections over sum
of lesions), which weigh every lesion equally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gdfree.arrays import as_mask, as_spacing, same_shape
from gdfree.metrics.calibration import ReliabilityTable, reliability_table, retention_auc, retention_curve
from gdfree.metrics.froc import DEFAULT_THRESHOLDS, FrocCounts, froc, froc_counts, sensitivity_at_fp
from gdfree.metrics.lesions import (
    VOLUME_BINS,
    DetectionRule,
    LesionMatch,
    bootstrap_pooled_f1,
    label_lesions,
    lesion_f1,
    match_lesions,
)
from gdfree.metrics.patient import (
    PATIENT_SCORES,
    PROBABILITY_SCORES,
    patient_metrics,
    percentile_ci,
    probability_score,
    roc_curve_rows,
)
from gdfree.metrics.translation import translation_metrics
from gdfree.metrics.voxel import surface_distances, voxel_metrics

__all__ = ["CaseResult", "EvaluationConfig", "evaluate_case", "result_from_json", "result_to_json", "summarize"]


@dataclass(frozen=True)
class EvaluationConfig:
    """How predictions are scored.

    Attributes:
        rule: lesion detection rule.
        threshold: probability at which a probability map becomes a mask when no mask is given.
        froc_thresholds: probability thresholds of the FROC curve.
        patient_score: one of :data:`~gdfree.metrics.patient.PATIENT_SCORES`.
        patient_threshold: an exam is called active when its score is >= this; None = ``threshold`` for
            ``max_prob`` and the lesion probabilities, 1 lesion for ``count``, any volume (> 0 mm3) for ``volume``.
        lesion_calibration: a model's (slope, intercept) for ``top_lesion_calibrated`` (required by it).
        n_bins: calibration bins. n_boot, seed: bootstrap resamples and their seed.
        fp_per_scan: the FROC operating points reported.
    """

    rule: DetectionRule = field(default_factory=DetectionRule)
    threshold: float = 0.5
    froc_thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    patient_score: str = "max_prob"
    patient_threshold: float | None = None
    lesion_calibration: tuple[float, float] | None = None
    n_bins: int = 10
    n_boot: int = 2000
    seed: int = 0
    fp_per_scan: tuple[float, ...] = (0.5, 1.0, 2.0)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold: expected a probability in (0, 1], got {self.threshold}")
        if self.patient_score not in PATIENT_SCORES:
            raise ValueError(f"patient_score: expected one of {', '.join(PATIENT_SCORES)}, got {self.patient_score!r}")
        if self.patient_score == "top_lesion_calibrated" and self.lesion_calibration is None:
            raise ValueError("patient_score top_lesion_calibrated: a model's lesion calibration is needed")

    @property
    def resolved_patient_threshold(self) -> float:
        if self.patient_threshold is not None:
            return self.patient_threshold
        defaults = {"count": 1.0, "volume": 1e-9}
        return defaults.get(self.patient_score, self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": dict(self.rule.__dict__),
            "threshold": self.threshold,
            "froc_thresholds": list(self.froc_thresholds),
            "patient_score": self.patient_score,
            "patient_threshold": self.resolved_patient_threshold,
            **({"lesion_calibration": list(self.lesion_calibration)} if self.lesion_calibration else {}),
            "n_bins": self.n_bins,
            "n_boot": self.n_boot,
            "seed": self.seed,
            "fp_per_scan": list(self.fp_per_scan),
        }


@dataclass
class CaseResult:
    """Everything computed for one case.

    Attributes:
        case_id: the case's name. row: flat per-case metrics. match: the lesion matching.
        froc: per-threshold counts (None without a probability map).
        reliability: calibration sums (None without a probability map).
        active: reference label of the exam. score: the patient score (NaN if it needs a missing input).
        retention: the nDSC retention curve at ``RETENTION_FRACTIONS`` (None without an uncertainty map).
    """

    case_id: str
    row: dict[str, Any]
    match: LesionMatch
    froc: FrocCounts | None
    reliability: ReliabilityTable | None
    active: bool
    score: float
    activity: Any = None
    retention: np.ndarray | None = None

    def lesion_rows(self, affine: np.ndarray | None = None) -> list[dict[str, Any]]:
        """One row per reference and per predicted lesion: volume, bin, centroid (voxels and, given the
        affine, mm), and whether it is detected / a true positive."""
        rows = []
        for kind, volumes, centroids, hits in (
            ("ref", self.match.ref_volume_mm3, self.match.ref_centroid_vox, self.match.ref_detected),
            ("pred", self.match.pred_volume_mm3, self.match.pred_centroid_vox, self.match.pred_true),
        ):
            mm = centroids @ affine[:3, :3].T + affine[:3, 3] if affine is not None and len(centroids) else centroids
            for i, (vol, c, hit) in enumerate(zip(volumes, centroids, hits, strict=True)):
                rows.append({
                    "case_id": self.case_id,
                    "source": kind,
                    "lesion_id": i + 1,
                    "volume_mm3": float(vol),
                    "volume_bin": next(n for n, lo, hi in VOLUME_BINS if lo < vol <= hi),
                    "centroid_vox": [round(float(v), 2) for v in c],
                    "centroid_mm": [round(float(v), 2) for v in mm[i]] if affine is not None else None,
                    "matched": bool(hit),
                })  # fmt: skip
        return rows


def result_to_json(result: CaseResult) -> dict[str, Any]:
    """A CaseResult as plain JSON (arrays as lists with their dtype), read back by :func:`result_from_json`: what
    a shard of ``evaluate --shard`` records so that the shard completing the cohort can summarise it."""
    import dataclasses

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return {"array": value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"type": type(value).__name__, **{f.name: plain(getattr(value, f.name))
                                                      for f in dataclasses.fields(value)}}  # fmt: skip
        if isinstance(value, (list, tuple)):
            return {"list": [plain(v) for v in value]}
        if isinstance(value, (np.floating, np.integer, np.bool_)):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return {"float": repr(value)}  # strict JSON has no NaN
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(result)


def result_from_json(data: dict[str, Any]) -> CaseResult:
    """The CaseResult :func:`result_to_json` wrote."""
    from gdfree.metrics.activity import LesionActivity

    types = {t.__name__: t for t in (CaseResult, LesionMatch, FrocCounts, ReliabilityTable, DetectionRule,
                                      LesionActivity)}  # fmt: skip

    def back(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"float"}:
            return float(value["float"])
        if isinstance(value, dict) and "array" in value:
            return np.asarray(value["array"], dtype=value["dtype"]).reshape(value["shape"])
        if isinstance(value, dict) and "list" in value:
            return [back(v) for v in value["list"]]
        if isinstance(value, dict) and value.get("type") in types:
            kind = types[value["type"]]
            return kind(**{k: back(v) for k, v in value.items() if k != "type"})
        if isinstance(value, dict):
            return {k: back(v) for k, v in value.items()}
        return value

    result = back(data)
    if not isinstance(result, CaseResult):
        raise ValueError("result_from_json: not a recorded case result")
    if isinstance(result.activity, list):
        result.activity = tuple(result.activity)
    return result


def evaluate_case(
    ref: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    case_id: str = "case",
    pred: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    brain: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    synth: np.ndarray | None = None,
    target_image: np.ndarray | None = None,
    config: EvaluationConfig | None = None,
) -> CaseResult:
    """Every metric this case's inputs allow.

    Args:
        ref: reference mask. spacing_mm: voxel size.
        pred: predicted mask; if None it is ``prob >= config.threshold``.
        prob: probability map (FROC, calibration, ``max_prob`` score).
        brain: brain mask; calibration, retention and ``max_prob`` are restricted to it.
        uncertainty: voxel uncertainty (retention curve, R-AUC).
        synth, target_image: synthetic and acquired post-Gd T1w on one intensity scale (translation metrics
            in ``brain``, ``synth_*``, and inside the reference mask, ``synth_ref_*``).

    Raises:
        ValueError: neither ``pred`` nor ``prob``, or arrays on different grids.
    """
    cfg = config or EvaluationConfig()
    spacing = as_spacing(spacing_mm)
    ref = as_mask(ref, "ref")
    if pred is None and prob is None:
        raise ValueError(f"{case_id}: a predicted mask or a probability map is needed")
    if prob is not None:
        prob = np.asarray(prob, dtype=np.float32)
        same_shape(("ref", ref), ("prob", prob))
    mask = as_mask(pred, "pred") if pred is not None else np.asarray(prob) >= cfg.threshold
    same_shape(("ref", ref), ("pred", mask))
    region = as_mask(brain, "brain") if brain is not None else None
    if region is not None:
        same_shape(("ref", ref), ("brain", region))

    row: dict[str, Any] = {"case_id": case_id}
    row.update(voxel_metrics(mask, ref, spacing))
    row.update(surface_distances(mask, ref, spacing))
    match = match_lesions(mask, ref, spacing, cfg.rule)
    row.update(match.summary())
    counts, table, curve = None, None, None
    if prob is not None:
        counts = froc_counts(prob, ref, spacing, cfg.rule, cfg.froc_thresholds)
        inside = prob[region] if region is not None else prob
        table = reliability_table(inside, ref[region] if region is not None else ref, cfg.n_bins)
        row["ece"] = table.ece
    if uncertainty is not None:
        unc = np.asarray(uncertainty)
        same_shape(("ref", ref), ("uncertainty", unc))
        sel = region if region is not None else slice(None)
        curve = retention_curve(mask[sel], ref[sel], unc[sel])
        row["retention_auc"] = retention_auc(curve)
        if prob is not None:  # the baseline: voxels ordered by the probability alone (its binary entropy)
            q = np.clip(np.asarray(prob, np.float64)[sel], 1e-12, 1 - 1e-12)
            entropy = -(q * np.log(q) + (1 - q) * np.log1p(-q))
            row["retention_auc_probability"] = retention_auc(retention_curve(mask[sel], ref[sel], entropy))
    if synth is not None and target_image is not None:
        row.update({f"synth_{k}": v for k, v in translation_metrics(synth, target_image, region).items()})
        span = float(np.ptp(target_image[region])) if region is not None and region.any() else None
        inside = translation_metrics(synth, target_image, ref, data_range=span or None)  # brain range: comparable
        row.update({f"synth_ref_{k}": v for k, v in inside.items()})

    score = _patient_score(cfg, prob, mask, spacing, region, match)
    row["patient_score"] = score
    row["active"] = match.n_ref > 0
    return CaseResult(case_id, row, match, counts, table, match.n_ref > 0, score, retention=curve)


def _patient_score(
    cfg: EvaluationConfig, prob: np.ndarray | None, mask: np.ndarray, spacing: Sequence[float],
    region: np.ndarray | None, match: LesionMatch,
) -> float:  # fmt: skip
    """The case's ``cfg.patient_score``; NaN for a probability score without a probability map."""
    if cfg.patient_score in PROBABILITY_SCORES:
        if prob is None:
            return math.nan
        labels = (label_lesions(mask, spacing, cfg.rule.connectivity, cfg.rule.min_volume_mm3)[0]
                  if cfg.patient_score != "max_prob" else np.zeros(0, np.int32))  # the maximum needs no lesions
        inside = np.where(region, prob, 0.0) if region is not None else prob
        return probability_score(cfg.patient_score, inside, labels, cfg.lesion_calibration)
    return float(match.n_pred) if cfg.patient_score == "count" else float(match.pred_volume_mm3.sum())


def _retention_gain(results: Sequence[CaseResult], cfg: EvaluationConfig) -> dict[str, Any] | None:
    """Paired over cases: how much lower an uncertainty map's R-AUC is than the probability's own (mean, bootstrap
    95% CI over cases, n); None without a case holding both."""
    pairs = np.array([(r.row["retention_auc_probability"], r.row["retention_auc"]) for r in results
                      if math.isfinite(r.row.get("retention_auc_probability", math.nan))
                      and math.isfinite(r.row.get("retention_auc", math.nan))]).reshape(-1, 2)  # fmt: skip
    if not len(pairs):
        return None
    gain = pairs[:, 0] - pairs[:, 1]
    rows = np.random.default_rng(cfg.seed).integers(0, len(gain), (cfg.n_boot, len(gain)))
    low, high, _ = percentile_ci(gain[rows].mean(axis=1))
    return {"mean": float(gain.mean()), "ci": [low, high], "n": len(gain)}


_SUMMARY_METRICS = (
    "dice", "ndsc", "sensitivity", "precision", "avd_percent", "volume_difference_mm3", "hd95_mm", "assd_mm",
    "lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_fp", "ece", "retention_auc",
    "retention_auc_probability",
    "synth_mae", "synth_psnr_db", "synth_ssim", "synth_ref_mae", "synth_ref_psnr_db", "synth_ref_ssim",
)  # fmt: skip


def _describe(values: list[float]) -> dict[str, float | int]:
    arr = np.asarray(values, dtype=float)
    ok = arr[np.isfinite(arr)]
    if ok.size == 0:
        return {"mean": math.nan, "median": math.nan, "std": math.nan, "n": 0, "n_undefined": int(arr.size)}
    return {
        "mean": float(ok.mean()),
        "median": float(np.median(ok)),
        "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
        "n": int(ok.size),
        "n_undefined": int(arr.size - ok.size),
    }


def summarize(results: Sequence[CaseResult], config: EvaluationConfig | None = None) -> dict[str, Any]:
    """Cohort summary: per-metric statistics over cases, pooled lesion detection (overall and per volume
    bin), the FROC curve, patient-level metrics with bootstrap CIs and the cohort calibration.

    Raises:
        ValueError: no case.
    """
    cfg = config or EvaluationConfig()
    if not results:
        raise ValueError("results: no case to summarise")
    summary: dict[str, Any] = {"n_cases": len(results), "config": cfg.as_dict()}
    notes: list[str] = []
    summary["per_case"] = {
        key: _describe([r.row.get(key, math.nan) for r in results])
        for key in _SUMMARY_METRICS
        if any(key in r.row for r in results)
    }
    n_ref = sum(r.match.n_ref for r in results)
    n_pred = sum(r.match.n_pred for r in results)
    tp_ref = sum(r.match.tp_ref for r in results)
    tp_pred = sum(r.match.tp_pred for r in results)
    sens = tp_ref / n_ref if n_ref else math.nan
    prec = tp_pred / n_pred if n_pred else math.nan
    f1 = lesion_f1(cfg.rule.name, n_ref, n_pred, tp_ref, tp_pred)
    summary["pooled_lesions"] = {
        "n_ref_lesions": n_ref, "n_pred_lesions": n_pred, "lesion_tp_ref": tp_ref, "lesion_tp_pred": tp_pred,
        "lesion_sensitivity": sens, "lesion_precision": prec, "lesion_f1": f1,
        "fp_per_scan": (n_pred - tp_pred) / len(results),
    }  # fmt: skip
    boot = bootstrap_pooled_f1([[r.match.counts for r in results]], cfg.rule.name, n_boot=cfg.n_boot, seed=cfg.seed)
    summary["pooled_lesions"]["lesion_f1_ci"] = list(percentile_ci(boot[:, 0])[:2])
    gain = _retention_gain(results, cfg)
    if gain is not None:
        summary["retention_gain"] = gain
    bins = []
    per_case_bins = [r.match.by_volume() for r in results]
    for i, (name, _, _) in enumerate(VOLUME_BINS):
        per = [case_bins[i] for case_bins in per_case_bins]
        nr, det = sum(p["n_ref_lesions"] for p in per), sum(p["lesion_tp_ref"] for p in per)
        npred, fp_bin = sum(p["n_pred_lesions"] for p in per), sum(p["lesion_fp"] for p in per)
        bins.append({
            "volume_bin": name, "n_ref_lesions": nr, "lesion_tp_ref": det, "n_pred_lesions": npred, "lesion_fp": fp_bin,
            "lesion_sensitivity": det / nr if nr else math.nan,
            "lesion_precision": (npred - fp_bin) / npred if npred else math.nan,
        })  # fmt: skip
    summary["by_volume"] = bins
    with_prob = [r for r in results if r.froc is not None]
    if with_prob and len(with_prob) < len(results):
        notes.append(f"only {len(with_prob)} of {len(results)} cases have a probability map: no FROC or calibration")
    if len(with_prob) == len(results):
        curve = froc(r.froc for r in with_prob if r.froc is not None)
        summary["froc"] = {
            "thresholds": curve.thresholds.tolist(),
            "sensitivity": curve.sensitivity.tolist(),
            "fp_per_scan": curve.fp_per_scan.tolist(),
            "sensitivity_at_fp": {str(k): v for k, v in sensitivity_at_fp(curve, cfg.fp_per_scan).items()},
        }
        table = with_prob[0].reliability
        for r in with_prob[1:]:
            table = table + r.reliability  # type: ignore[operator]
        assert table is not None
        summary["calibration"] = {"ece": table.ece, "ece_p_ge_0.1": table.ece_above(0.1), "n_bins": cfg.n_bins,
                                  "largest_gap": table.largest_gap(), "table": table.rows()}  # fmt: skip
    scores = [r.score for r in results]
    if not all(math.isfinite(s) for s in scores):
        notes.append(f"patient score {cfg.patient_score} needs a probability map in every case; try count or volume")
    else:
        labels = [int(r.active) for r in results]
        metrics = patient_metrics(labels, scores, cfg.resolved_patient_threshold, n_boot=cfg.n_boot, seed=cfg.seed)
        summary["patient"] = {
            "score": cfg.patient_score,
            **metrics.as_dict(),
            "roc_curve": roc_curve_rows(labels, scores),
        }
    summary["notes"] = notes
    return summary
