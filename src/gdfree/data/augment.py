"""TorchIO augmentation of training patches (spatial and intensity); labels follow with nearest neighbour.

TorchIO draws its parameters from torch's global generator, which training seeds once; each transformed
subject keeps its applied parameters in ``subject.history`` (TorchIO's replay mechanism).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["augment", "build_augmentation"]


def build_augmentation(strength: float = 1.0) -> Any:
    """Flip left-right, small affine (scale 10%, rotation 10 degrees), bias field, Gaussian noise.

    ``strength`` scales the ranges (0 disables every transform).
    """
    import torchio as tio

    if strength <= 0:
        return tio.Compose([])
    return tio.Compose([
        tio.RandomFlip(axes=(0,), flip_probability=0.5),
        tio.RandomAffine(scales=0.1 * strength, degrees=10 * strength, p=0.5),
        tio.RandomBiasField(coefficients=0.2 * strength, p=0.3),
        tio.RandomNoise(std=(0.0, 0.1 * strength), p=0.3),
    ])  # fmt: skip


def augment(transform: Any, image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transform`` to one (C, P, P, P) image patch and its (H, P, P, P) binary targets."""
    import torch
    import torchio as tio

    subject = tio.Subject(
        image=tio.ScalarImage(tensor=torch.from_numpy(image)),
        target=tio.LabelMap(tensor=torch.from_numpy(target)),
    )
    out = transform(subject)
    return out["image"].data.numpy().astype(np.float32), (out["target"].data.numpy() > 0.5).astype(np.float32)
