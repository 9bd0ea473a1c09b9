"""Why the model says so: modality importance, signed attribution maps, lesion-centred patterns and the
randomisation sanity checks, for the ``enhancing`` head of a segmentation network."""

from gdfree.explain.importance import OCCLUSIONS, occlusion_importance, permutation_importance, summarise
from gdfree.explain.maps import METHODS, lesion_maps
from gdfree.explain.patterns import cohort_profiles, lesion_profile, signed_distance_mm
from gdfree.explain.run import explain_dataset
from gdfree.explain.sanity import PASS_BELOW, randomised_copy, rank_correlation
from gdfree.explain.targets import RegionTarget, find_lesions

__all__ = [
    "METHODS",
    "OCCLUSIONS",
    "PASS_BELOW",
    "RegionTarget",
    "cohort_profiles",
    "explain_dataset",
    "find_lesions",
    "lesion_maps",
    "lesion_profile",
    "occlusion_importance",
    "permutation_importance",
    "randomised_copy",
    "rank_correlation",
    "signed_distance_mm",
    "summarise",
]
