"""Training data: cases as normalised arrays, patch sampling, augmentation."""

from gdfree.data.cases import ArrayCase, file_fingerprints, load_array_case, normalise
from gdfree.data.sampling import PatchSampler, SamplingRatios

__all__ = ["ArrayCase", "PatchSampler", "SamplingRatios", "file_fingerprints", "load_array_case", "normalise"]
