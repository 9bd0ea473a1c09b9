"""How sure a prediction is: sampled predictions (MC dropout, ensembles, test-time flips), voxel, lesion and
patient uncertainty measures, and temperature scaling."""

from gdfree.uncertainty.measures import VOXEL_MEASURES, lesion_uncertainty, patient_uncertainty, voxel_uncertainty
from gdfree.uncertainty.sampling import FLIPS, dropout_layers, fit_temperature, sample_predictions

__all__ = [
    "FLIPS", "VOXEL_MEASURES", "dropout_layers", "fit_temperature", "lesion_uncertainty", "patient_uncertainty",
    "sample_predictions", "voxel_uncertainty",
]  # fmt: skip
