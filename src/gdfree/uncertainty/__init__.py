"""How sure a prediction is: voxel, lesion and patient uncertainty measures of sampled predictions, and
temperature scaling. The samples themselves (MC dropout, ensembles, test-time flips) come from
:mod:`gdfree.infer.sampling`."""

from gdfree.uncertainty.measures import VOXEL_MEASURES, lesion_uncertainty, patient_uncertainty, voxel_uncertainty
from gdfree.uncertainty.temperature import fit_temperature

__all__ = ["VOXEL_MEASURES", "fit_temperature", "lesion_uncertainty", "patient_uncertainty", "voxel_uncertainty"]
