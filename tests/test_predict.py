"""Whole-volume and tiled inference, and the lesion table."""

from __future__ import annotations

import numpy as np
import torch

from gdfree.models import MultitaskUNet
from gdfree.predict import lesion_rows, predict_volume


def test_whole_and_tiled_inference_agree_in_shape_and_range():
    torch.manual_seed(0)
    net = MultitaskUNet(2, ("enhancing", "lesion"), channels=(4, 8), strides=(2, 2), num_res_units=1).eval()
    image = np.random.default_rng(0).normal(size=(2, 21, 26, 19)).astype(np.float32)  # not a multiple of 4
    whole = predict_volume(net, image)
    tiled = predict_volume(net, image, max_whole_voxels=1000, tile=16, overlap=0.5)
    assert whole.shape == tiled.shape == (2, 21, 26, 19)
    assert whole.dtype == np.float32 and 0 <= tiled.min() and tiled.max() <= 1
    # Instance norm sees other statistics per tile, so the two differ a little but agree broadly.
    assert np.corrcoef(whole.ravel(), tiled.ravel())[0, 1] > 0.8


def test_lesion_rows_by_hand():
    prob = np.zeros((10, 10, 10), np.float32)
    mask = np.zeros(prob.shape, bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels of 8 mm3 under the 2 mm affine below
    prob[1:3, 1:3, 1:3] = 0.6
    prob[1, 1, 1] = 0.9
    mask[7, 7, 7] = True  # 8 mm3: kept (> 3 mm3)
    prob[7, 7, 7] = 0.7
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-10, -10, -10)
    rows = lesion_rows(prob, mask, affine)
    assert len(rows) == 2
    first = rows[0]
    assert first["volume_mm3"] == 64.0 and first["probability"] == np.float32(0.9)
    assert (first["centroid_x_mm"], first["centroid_y_mm"], first["centroid_z_mm"]) == (-7.0, -7.0, -7.0)
    assert abs(first["mean_probability"] - (7 * 0.6 + 0.9) / 8) < 1e-6
    assert rows[1]["volume_mm3"] == 8.0 and rows[1]["centroid_x_mm"] == 4.0
    assert lesion_rows(prob, np.zeros_like(mask), affine) == []
