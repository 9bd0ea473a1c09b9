"""Training the ``t1gd`` head: its loss and options (the framing itself: :mod:`gdfree.data.translation`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gdfree.data.translation import TARGET_CLIP

__all__ = ["Adversary", "TranslationConfig", "translation_loss"]


@dataclass(frozen=True)
class TranslationConfig:
    """Loss of the ``t1gd`` head (``translation:`` in the training YAML).

    Attributes:
        l1_weight, ssim_weight: weights of the L1 and (1 - SSIM) terms.
        enhancement_weight: extra L1 weight on voxels whose target exceeds the input T1w by ``enhancement_z``.
        enhancement_z: that excess, in T1w z units.
        adversarial_weight: weight of the LSGAN generator loss (0: no discriminator is trained); the
            discriminator is :func:`gdfree.data.generative.patch_discriminator` on (inputs, post-Gd image).
        discriminator_lr: its learning rate (Adam, betas 0.5, 0.999).
    """

    l1_weight: float = 1.0
    ssim_weight: float = 0.5
    enhancement_weight: float = 20.0
    enhancement_z: float = 0.5
    adversarial_weight: float = 0.0
    discriminator_lr: float = 2e-4

    def __post_init__(self) -> None:
        values = (self.l1_weight, self.ssim_weight, self.enhancement_weight, self.adversarial_weight)
        if min(values) < 0 or self.l1_weight + self.ssim_weight <= 0:
            raise ValueError("translation: weights must be >= 0 and l1_weight + ssim_weight > 0")
        if self.enhancement_z <= 0 or self.discriminator_lr <= 0:
            raise ValueError("translation: enhancement_z and discriminator_lr must be > 0")


def translation_loss(
    pred: torch.Tensor, target: torch.Tensor, t1: torch.Tensor, cfg: TranslationConfig
) -> torch.Tensor:
    """L1 with extra weight where the target enhances, plus (1 - SSIM), of the synthetic post-Gd T1w.

    Args:
        pred, target, t1: (B, 1, X, Y, Z) synthetic image, target and input T1w channel (T1w z units).
    """
    weight = 1.0 + cfg.enhancement_weight * (target - t1 > cfg.enhancement_z).float()
    loss = cfg.l1_weight * (weight * (pred - target).abs()).sum() / weight.sum()
    if cfg.ssim_weight > 0:
        loss = loss + cfg.ssim_weight * (1.0 - _ssim(pred, target, TARGET_CLIP[1] - TARGET_CLIP[0]))
    return loss


def _ssim(x: torch.Tensor, y: torch.Tensor, data_range: float, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004: Gaussian window, K1 0.01, K2 0.03) of (B, 1, X, Y, Z) images, valid region.

    The same statistic as ``monai.metrics.regression.compute_ssim_and_cs`` with a Gaussian kernel, filtered
    separably (three 1-D passes instead of one 7^3 convolution: 16 times fewer multiplications, which made
    MONAI's version the most expensive part of a CPU training step)."""
    import torch.nn.functional as F

    half = window // 2
    g = torch.exp(-((torch.arange(window, dtype=x.dtype, device=x.device) - half) ** 2) / (2 * sigma**2))
    g = g / g.sum()

    def blur(v: torch.Tensor) -> torch.Tensor:
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = window
            v = F.conv3d(v, g.view(shape))
        return v

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return ssim.mean()


class Adversary:
    """The optional pix2pix discriminator of the ``t1gd`` head: a 3-D PatchGAN on (inputs, post-Gd image),
    trained with its own Adam optimiser one step per training step (LSGAN).

    Args:
        in_channels: input modalities of the network (the discriminator sees them plus one image channel).
        cfg: the translation options (``adversarial_weight`` > 0).
        device: where it runs.
    """

    def __init__(self, in_channels: int, cfg: TranslationConfig, device: str | torch.device) -> None:
        from gdfree.data.generative import patch_discriminator

        self.cfg = cfg
        self.network = patch_discriminator(in_channels + 1).to(device)
        self.optimiser = torch.optim.Adam(self.network.parameters(), lr=cfg.discriminator_lr, betas=(0.5, 0.999))

    def step(self, inputs: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Update the discriminator on real and (detached) synthetic pairs; return the weighted generator loss
        (to add to the network's loss) and the discriminator's loss.

        Shapes: inputs (B, C, P, P, P); fake, real (B, 1, P, P, P) for the samples that have a target."""
        from gdfree.data.generative import lsgan_discriminator_loss, lsgan_generator_loss

        d_loss = lsgan_discriminator_loss(self.network, torch.cat([inputs, real], 1), torch.cat([inputs, fake], 1))
        self.optimiser.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimiser.step()
        g_loss = lsgan_generator_loss(self.network, torch.cat([inputs, fake], 1))
        return self.cfg.adversarial_weight * g_loss, float(d_loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"network": self.network.state_dict(), "optimiser": self.optimiser.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state["network"])
        self.optimiser.load_state_dict(state["optimiser"])
