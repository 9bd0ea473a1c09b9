"""Quality of a trained generator: per-class intensity statistics against held-out real patches, the test
accuracy of a small discriminator trained to tell generated from held-out real patches, and a nearest-neighbour
distance to the training patches against that to held-out patches (a generator that copies sits near 0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import nn

from gdfree.data.generative.networks import generate
from gdfree.data.label_maps import LABELS

__all__ = ["LabelledPatches", "quality_report"]


@dataclass
class LabelledPatches:
    """Real training patches: images (N, C, P, P, P) float32 and label maps (N, P, P, P) uint8."""

    images: np.ndarray
    label_maps: np.ndarray


def _class_stats(images: np.ndarray, label_maps: np.ndarray) -> dict[str, list[list[float]]]:
    stats = {}
    for value, name in enumerate(LABELS):
        if value == 0:
            continue
        sel = label_maps == value
        if sel.sum() < 10:
            continue
        vals = np.stack([images[:, c][sel] for c in range(images.shape[1])])
        stats[name] = [[round(float(v.mean()), 3), round(float(v.std()), 3)] for v in vals]
    return stats


def _discriminator_accuracy(real: np.ndarray, fake: np.ndarray, seed: int, steps: int = 300) -> float:
    """Test accuracy of a small CNN trained on half of (real, generated) to tell them apart (0.5: cannot).

    No normalisation layers: instance norm would remove the very intensity statistics that can give a
    generator away."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.concatenate([real, fake]).astype(np.float32)
    t = np.concatenate([np.ones(len(real)), np.zeros(len(fake))]).astype(np.float32)
    order = rng.permutation(len(x))
    half = len(x) // 2
    train, test = order[:half], order[half:]
    c = x.shape[1]

    def block(i: int, o: int) -> nn.Module:
        return Convolution(3, i, o, strides=2, kernel_size=3, norm=None, act=("leakyrelu", {"negative_slope": 0.2}))

    net = nn.Sequential(block(c, 8), block(8, 16), block(16, 16), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                        nn.Linear(16, 1))  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(steps):
        pick = rng.choice(train, size=min(8, len(train)))
        loss = nn.functional.binary_cross_entropy_with_logits(net(torch.from_numpy(x[pick]))[:, 0],
                                                              torch.from_numpy(t[pick]))  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(x[test]))[:, 0].numpy() > 0
    return float((pred == (t[test] > 0.5)).mean())


def _nearest_rmse(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    q = queries.reshape(len(queries), -1).astype(np.float64)
    r = references.reshape(len(references), -1).astype(np.float64)
    d2 = (q**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2 * q @ r.T
    return np.sqrt(np.maximum(d2, 0).min(axis=1) / q.shape[1])


def quality_report(model: nn.Module, train: LabelledPatches, heldout: LabelledPatches, seed: int = 0) -> dict[str, Any]:
    """Quality of a trained generator on held-out real patches (generated from the held-out label maps).

    Returns ``class_stats`` (per label class and channel, [mean, SD] of real and generated), ``mean_gap_sd``
    (largest |mean difference| over classes and channels, in units of the real class SD),
    ``discriminator_accuracy`` (0.5 = indistinguishable, 1 = always told apart), and ``nearest_rmse``: the
    median RMSE of generated patches to their nearest training patch and to their nearest held-out real
    patch (equal-sized reference sets: the first training patches), and the median ratio of the two
    (the data-copying test of Meehan et al. 2020 in its simplest form: about 1 when the generator
    does not copy, near 0 for one that hands back training patches).
    """
    fake = generate(model, heldout.label_maps, seed)
    real_stats, fake_stats = _class_stats(heldout.images, heldout.label_maps), _class_stats(fake, heldout.label_maps)
    gaps = [abs(f[0] - r[0]) / max(r[1], 1e-6) for k in real_stats if k in fake_stats
            for r, f in zip(real_stats[k], fake_stats[k], strict=True)]  # fmt: skip
    reference = train.images[: len(heldout.images)]  # as many training as held-out patches: a fair comparison
    to_train, to_heldout = _nearest_rmse(fake, reference), _nearest_rmse(fake, heldout.images)
    return {
        "class_stats": {"real": real_stats, "generated": fake_stats},
        "mean_gap_sd": round(max(gaps), 3) if gaps else None,
        "discriminator_accuracy": round(_discriminator_accuracy(heldout.images, fake, seed), 3),
        "nearest_rmse": {
            "to_train_median": round(float(np.median(to_train)), 4),
            "to_heldout_median": round(float(np.median(to_heldout)), 4),
            "train_over_heldout": round(float(np.median(to_train / np.maximum(to_heldout, 1e-12))), 3),
        },
        "patches": {"train": len(train.images), "heldout": len(heldout.images)},
    }
