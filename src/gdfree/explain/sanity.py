"""Sanity checks for attribution maps (Adebayo et al. 2018): an explanation that barely changes when the
model's weights are re-drawn at random, or when the model was trained on random labels, explains the input
or the architecture, not what the model learned.

The comparison is Spearman's rank correlation of two signed maps over the voxels of the crop where either
is non-zero. A map that passes correlates little (< 0.3) with the randomised model's map, while the same
computation repeated on the trained model correlates perfectly (the check can fail).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

__all__ = ["PASS_BELOW", "randomised_copy", "rank_correlation"]

PASS_BELOW = 0.3
"""A randomisation check passes when the rank correlation with the randomised model's map is below this."""


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every parameter re-drawn from its layer's own initialiser (seeded); layers
    without one get N(0, std of the trained tensor). The original is not touched."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    done: set[int] = set()
    for module in clone.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset) and module is not clone:
            reset()
            done |= {id(p) for p in module.parameters(recurse=False)}
    with torch.no_grad():
        for p in clone.parameters():
            if id(p) not in done:
                p.normal_(0.0, float(p.std()) if p.numel() > 1 else 1.0)
    return clone.eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of one shape over the voxels where either is non-zero
    (NaN when fewer than 3 such voxels or either map is constant there)."""
    from scipy.stats import spearmanr

    if a.shape != b.shape:
        raise ValueError(f"rank_correlation: shapes differ, {a.shape} vs {b.shape}")
    keep = (a != 0) | (b != 0)
    if keep.sum() < 3:
        return float("nan")
    x, y = a[keep].ravel(), b[keep].ravel()
    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)
