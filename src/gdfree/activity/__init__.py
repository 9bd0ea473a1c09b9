"""The lesion-level activity framing: is each visible T2/FLAIR lesion active (would it enhance)?"""

from gdfree.activity.classifier import (
    ActivityClassifier,
    ActivityConfig,
    case_lesions,
    fit_activity,
    fit_activity_dataset,
)
from gdfree.activity.features import feature_names, lesion_activity_labels, lesion_features

__all__ = [
    "ActivityClassifier",
    "ActivityConfig",
    "case_lesions",
    "feature_names",
    "fit_activity",
    "fit_activity_dataset",
    "lesion_activity_labels",
    "lesion_features",
]
