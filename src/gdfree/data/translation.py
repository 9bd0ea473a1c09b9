"""The translation framing: a ``t1gd`` head regresses the post-Gd T1w, and enhancement is read from it.

Target: the acquired post-Gd T1w in the pre-Gd T1w's normalised units (:func:`translation_target`): both are
first brought to one normal-appearing white-matter (NAWM) mode, as :mod:`gdfree.preprocess.enhancing` does,
then z-scored with the T1w's brain mean and spread; so target minus the T1w input channel is the enhancement.

Loss (:func:`translation_loss`): L1 with ``enhancement_weight`` extra weight where the target exceeds the
input T1w by more than ``enhancement_z`` (enhancement is a tiny share of voxels: enhancing lesions, and on
real scans vessels), plus ``ssim_weight`` x (1 - SSIM) (MONAI's 3-D SSIM), plus optionally
``adversarial_weight`` x a least-squares GAN loss against a 3-D PatchGAN discriminator that sees the
pre-contrast inputs with the real or synthetic post-Gd image (pix2pix).

Reading enhancement (:func:`enhancement_z`): synthetic minus input T1w, in robust spreads over NAWM (median
and 1.4826 x MAD), the subtraction ``preprocess.enhancing`` thresholds on real post-Gd images; a logistic
calibration fitted on validation patients (:func:`fit_enhancement_calibration`) maps it to an enhancing
probability, which then goes through the masks, lesion table and patient score of the segmentation framing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdfree.arrays import mask_stats, nawm_mask, robust_stats, sigmoid, zscore
from gdfree.preprocess.intensity import normalise_intensity

__all__ = [
    "DEFAULT_CALIBRATION",
    "TARGET_CLIP",
    "TRANSLATION_HEAD",
    "enhancement_probability",
    "enhancement_z",
    "fit_enhancement_calibration",
    "translation_target",
]

TRANSLATION_HEAD = "t1gd"
"""Name of the regression head that synthesises the post-Gd T1w."""

DEFAULT_CALIBRATION = (1.0, -3.0)
"""(a, b) used when the validation cases cannot calibrate (no enhancing voxel): probability 0.5 at 3 robust
spreads, the threshold ``preprocess.enhancing`` derives labels with by default."""

TARGET_CLIP = (-5.0, 15.0)
"""The target's range in T1w z units (enhancement may exceed the inputs' clip at 5)."""


def translation_target(t1: np.ndarray, t1gd: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The post-Gd T1w ``t1gd`` in the normalised units of the raw pre-Gd ``t1`` (both (X, Y, Z), one grid).

    ``t1gd`` is scaled so that its NAWM mode equals the T1w's, then z-scored with the T1w's brain mean and
    standard deviation (as :func:`gdfree.data.cases.normalise` z-scores the input), clipped to
    :data:`TARGET_CLIP`, 0 outside the brain.
    """
    brain = brain.astype(bool)
    _, pre = normalise_intensity(t1, brain, "nawm")
    _, post = normalise_intensity(t1gd, brain, "nawm")
    scaled = t1gd.astype(np.float64) * (pre["nawm_mode"] / post["nawm_mode"])
    return zscore(scaled, brain, clip=TARGET_CLIP, stats=mask_stats(t1, brain))


def enhancement_z(t1: np.ndarray, synth: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Synthetic minus input T1w (same units), in robust spreads above its NAWM median; 0 outside the brain."""
    brain = brain.astype(bool)
    diff = np.where(brain, synth - t1, 0.0)
    nawm = nawm_mask(brain)
    values = diff[nawm] if nawm.sum() > 100 else diff[brain]
    centre, spread = robust_stats(values)
    return np.where(brain, (diff - centre) / spread, 0.0).astype(np.float32)


def enhancement_probability(z: np.ndarray, calibration: Sequence[float]) -> np.ndarray:
    """sigmoid(a * z + b) for ``calibration`` (a, b)."""
    a, b = (float(v) for v in calibration)
    return sigmoid(a * z + b)


def fit_enhancement_calibration(
    zs: Sequence[np.ndarray], labels: Sequence[np.ndarray], brains: Sequence[np.ndarray],
    rng: np.random.Generator, max_voxels: int = 2_000_000,
) -> tuple[float, float]:  # fmt: skip
    """(a, b) of a logistic regression of the enhancing label on the enhancement z over brain voxels of the
    validation cases (a seeded uniform sample of at most ``max_voxels``).

    Raises:
        ValueError: no case, labels of one class only (nothing to calibrate against), or a slope <= 0.
    """
    from sklearn.linear_model import LogisticRegression

    if not zs:
        raise ValueError("fit_enhancement_calibration: no validation case")
    z = np.concatenate([a[b.astype(bool)] for a, b in zip(zs, brains, strict=True)])
    y = np.concatenate([lab[b.astype(bool)] for lab, b in zip(labels, brains, strict=True)]).astype(bool)
    if y.all() or not y.any():
        raise ValueError("fit_enhancement_calibration: the validation labels hold one class only")
    if z.size > max_voxels:
        keep = rng.choice(z.size, max_voxels, replace=False)
        z, y = z[keep], y[keep]
    fit = LogisticRegression(C=1e4).fit(z[:, None].astype(np.float64), y)
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not a > 0:  # read that way, less enhancement would mean "enhancing": a wrong answer that looks right
        raise ValueError(f"fit_enhancement_calibration: slope {a:.3g} <= 0, the synthetic image is not more "
                         "enhanced where the validation lesions enhance")  # fmt: skip
    return a, b
