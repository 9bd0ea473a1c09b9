"""Evaluation of a predicted dataset: :mod:`gdfree.evaluate.cohort` scores one case and summarises a cohort
with the metrics of :mod:`gdfree.metrics` (re-exported here), :mod:`gdfree.evaluate.files` pairs predictions
with a reference dataset and writes the tables. Both framings of the task (segmentation and post-Gd
synthesis) are scored by the same functions.
"""

from gdfree.evaluate.cohort import CaseResult, EvaluationConfig, evaluate_case, summarize
from gdfree.metrics.calibration import (
    ReliabilityTable,
    expected_calibration_error,
    reliability_table,
    retention_auc,
    retention_curve,
)
from gdfree.metrics.froc import Froc, FrocCounts, froc, froc_counts, sensitivity_at_fp
from gdfree.metrics.lesions import DetectionRule, LesionMatch, label_lesions, match_lesions
from gdfree.metrics.patient import PatientMetrics, bootstrap_ci, patient_metrics, roc_auc
from gdfree.metrics.translation import translation_metrics
from gdfree.metrics.voxel import dice, normalized_dice, surface_distances, voxel_metrics

__all__ = [
    "CaseResult",
    "DetectionRule",
    "EvaluationConfig",
    "Froc",
    "FrocCounts",
    "LesionMatch",
    "PatientMetrics",
    "ReliabilityTable",
    "bootstrap_ci",
    "dice",
    "evaluate_case",
    "expected_calibration_error",
    "froc",
    "froc_counts",
    "label_lesions",
    "match_lesions",
    "normalized_dice",
    "patient_metrics",
    "reliability_table",
    "retention_auc",
    "retention_curve",
    "roc_auc",
    "sensitivity_at_fp",
    "summarize",
    "surface_distances",
    "translation_metrics",
    "voxel_metrics",
]
