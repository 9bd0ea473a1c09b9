"""The generators (conditional VAE, conditional GAN), the PatchGAN discriminator and the least-squares GAN
losses; :func:`generate` samples a trained generator."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from torch import nn

from gdfree.data.label_maps import LABELS

__all__ = ["GENERATORS", "ConditionalGAN", "ConditionalVAE", "build_generator", "generate", "lsgan_discriminator_loss",
           "lsgan_generator_loss", "one_hot", "patch_discriminator"]  # fmt: skip

GENERATORS = ("none", "cvae", "cgan")


def one_hot(label_map: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, X, Y, Z) integer label maps to (B, 6, X, Y, Z) float32."""
    t = torch.as_tensor(label_map).long()
    return nn.functional.one_hot(t, len(LABELS)).permute(0, 4, 1, 2, 3).float()


def _conv(in_ch: int, out_ch: int, stride: int = 1, act: bool = True) -> nn.Module:
    if not act:
        return Convolution(3, in_ch, out_ch, strides=stride, kernel_size=3, conv_only=True)
    act_ = ("leakyrelu", {"negative_slope": 0.2})
    return Convolution(3, in_ch, out_ch, strides=stride, kernel_size=3, norm="instance", act=act_)


class ConditionalVAE(nn.Module):
    """Label map -> image, with a spatial latent (``latent`` channels at a quarter of the resolution)."""

    def __init__(self, channels: int, latent: int = 4, width: int = 16) -> None:
        super().__init__()
        n = len(LABELS)
        self.channels, self.latent = channels, latent
        self.encoder = nn.Sequential(
            _conv(channels + n, width), _conv(width, 2 * width, 2), _conv(2 * width, 2 * width, 2),
            _conv(2 * width, 2 * latent, act=False),
        )  # fmt: skip
        self.label_down = nn.Sequential(_conv(n, width, 2), _conv(width, width, 2))
        self.up = nn.Sequential(_conv(latent + width, 2 * width), nn.Upsample(scale_factor=2, mode="trilinear"),
                                _conv(2 * width, width), nn.Upsample(scale_factor=2, mode="trilinear"))  # fmt: skip
        self.head = nn.Sequential(_conv(width + n, width), _conv(width, channels, act=False))

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.up(torch.cat([z, self.label_down(y)], 1))
        return self.head(torch.cat([h, y], 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(torch.cat([x, y], 1)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z, y), mu, logvar

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (y.shape[0], self.latent, *(s // 4 for s in y.shape[2:]))
        return self.decode(torch.randn(shape, generator=generator), y)


class ConditionalGAN(nn.Module):
    """pix2pix-style: a U-Net generator G(label map, noise) and a PatchGAN discriminator D(image, label map)."""

    noise_channels = 2

    def __init__(self, channels: int, width: int = 16) -> None:
        super().__init__()
        n = len(LABELS)
        self.channels = channels
        self.generator = UNet(3, n + self.noise_channels, channels, (width, 2 * width, 4 * width), (2, 2),
                              num_res_units=1, norm="instance")  # fmt: skip
        self.discriminator = patch_discriminator(channels + n, width)

    def generate(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn((y.shape[0], self.noise_channels, *y.shape[2:]), generator=generator)
        return self.generator(torch.cat([y, noise], 1))

    @torch.no_grad()
    def sample(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generate(y, generator)


def patch_discriminator(in_channels: int, width: int = 16) -> nn.Module:
    """A 3-D PatchGAN (pix2pix): two strided convolutions, then one logit per patch of the input."""
    return nn.Sequential(_conv(in_channels, width, 2), _conv(width, 2 * width, 2), _conv(2 * width, 1, act=False))


def lsgan_discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss of the discriminator: real inputs to 1, ``fake`` (detached here) to 0."""
    return 0.5 * (((disc(real) - 1) ** 2).mean() + (disc(fake.detach()) ** 2).mean())


def lsgan_generator_loss(disc: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss of the generator: its ``fake`` inputs to 1."""
    return ((disc(fake) - 1) ** 2).mean()


def build_generator(kind: str, channels: int) -> nn.Module:
    """A fresh cVAE or cGAN for ``channels`` image channels."""
    if kind == "cvae":
        return ConditionalVAE(channels)
    if kind == "cgan":
        return ConditionalGAN(channels)
    raise ValueError(f"generative.kind: expected cvae or cgan, got {kind!r}")


@torch.no_grad()
def _brain_of(y_onehot: torch.Tensor) -> torch.Tensor:
    return 1.0 - y_onehot[:, :1]


def generate(model: Any, label_maps: np.ndarray, seed: int) -> np.ndarray:
    """Images (N, C, P, P, P) float32 for label maps (N, P, P, P), zero outside the brain, from ``seed``."""
    y = one_hot(label_maps)
    out = model.sample(y, torch.Generator().manual_seed(int(seed))) * _brain_of(y)
    return out.numpy().astype(np.float32)
