"""The sparse lesion matching against plain re-statements of each rule on random blob masks.

The re-statements follow the originals step by step: a dense overlap table as animaSegPerfAnalyzer builds
it (row 0 / column 0 = background), and Shifts' per-component IoU loops. They share no code with
``gdfree.metrics.lesions`` beyond scipy's labelling.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gdfree.metrics import DetectionRule, match_lesions


def _labels(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    labels, n = ndimage.label(mask)  # 6-connectivity
    kept = [i for i in range(1, n + 1) if (labels == i).sum() >= min_voxels]
    out = np.zeros_like(labels)
    for new, old in enumerate(kept, start=1):
        out[labels == old] = new
    return out, len(kept)


def _anima_true_positives(table: np.ndarray, alpha: float, beta: float, gamma: float) -> int:
    """Rows are the tested lesions, columns the other mask's components (both with background at 0)."""
    n_rows, n_cols = table.shape
    col_sum = table.sum(axis=0)
    detected = 0
    for i in range(1, n_rows):
        tp = table[i, 1:].sum()
        if tp / (tp + table[i, 0]) <= alpha:
            continue
        order = sorted(range(1, n_cols), key=lambda j: -table[i, j])
        weight, k, exit_ = 0.0, 0, False
        while weight < gamma and k < len(order) and not exit_:
            j = order[k]
            exit_ = table[0, j] / col_sum[j] > beta
            if not exit_:
                weight += table[i, j] / tp
            k += 1
        detected += not exit_
    return detected


def _shifts_counts(pred_labels: np.ndarray, n_pred: int, ref_labels: np.ndarray, n_ref: int, thr: float):
    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return (a & b).sum() / (a | b).sum()

    tp = fp = fn = 0
    for p in range(1, n_pred + 1):
        mp = pred_labels == p
        best = max([0.0] + [iou(mp, ref_labels == g) for g in np.unique(ref_labels[mp]) if g])
        tp, fp = (tp + 1, fp) if best >= thr else (tp, fp + 1)
    for g in range(1, n_ref + 1):
        mg = ref_labels == g
        best = max([0.0] + [iou(pred_labels == p, mg) for p in np.unique(pred_labels[mg]) if p])
        fn += best < thr
    return tp, fp, fn


def _blobs(seed: int, shape: tuple[int, int, int] = (24, 24, 24)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.52
    # The prediction: the reference moved and grown or shrunk a little, plus blobs of its own.
    pred = np.roll(ref, rng.integers(-1, 2, 3), axis=(0, 1, 2))
    pred = ndimage.binary_dilation(pred) if seed % 2 else ndimage.binary_erosion(pred)
    pred |= ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.54
    return pred, ref


@pytest.mark.parametrize("seed", range(6))
def test_msseg_matches_the_dense_anima_procedure(seed: int):
    pred, ref = _blobs(seed)
    rule = DetectionRule.preset("msseg")
    ref_labels, n_ref = _labels(ref, 4)
    pred_labels, n_pred = _labels(pred, 4)
    table = np.zeros((n_ref + 1, n_pred + 1), np.int64)
    np.add.at(table, (ref_labels.ravel(), pred_labels.ravel()), 1)
    match = match_lesions(pred, ref, (1, 1, 1), rule)
    assert (match.n_ref, match.n_pred) == (n_ref, n_pred)
    assert match.tp_ref == _anima_true_positives(table, rule.alpha, rule.beta, rule.gamma)
    assert match.tp_pred == _anima_true_positives(table.T, rule.alpha, rule.beta, rule.gamma)
    assert n_ref > 3 and n_pred > 3  # the blobs make a non-trivial case


@pytest.mark.parametrize("seed", range(6))
def test_iou_matches_shifts_loops(seed: int):
    pred, ref = _blobs(seed)
    ref_labels, n_ref = _labels(ref, 1)
    pred_labels, n_pred = _labels(pred, 1)
    match = match_lesions(pred, ref, (1, 1, 1), DetectionRule.preset("iou"))
    assert (match.tp_pred, match.fp, match.fn) == _shifts_counts(pred_labels, n_pred, ref_labels, n_ref, 0.25)
