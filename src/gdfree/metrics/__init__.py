"""Metrics: voxel, surface, lesion, FROC, patient, calibration, retention, translation and lesion-activity scores.

Pure array functions (numpy/scipy, physical ``spacing_mm``) that training validation, activity fitting and
:mod:`gdfree.evaluate` share, so that every framing is scored by the same code. Lesions are formed by
:func:`gdfree.arrays.label_components` under :class:`DetectionRule`.
"""

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
    "DetectionRule",
    "Froc",
    "FrocCounts",
    "LesionMatch",
    "PatientMetrics",
    "ReliabilityTable",
    "bootstrap_ci",
    "dice",
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
    "surface_distances",
    "translation_metrics",
    "voxel_metrics",
]
