"""Training a generator on the training patients' patches and using it in training: :class:`GenerativeConfig`,
:func:`train_generator`, :class:`Synthesiser` (replaces a share of patches) and :func:`fit_synthesiser`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gdfree.data.generative.networks import (
    GENERATORS,
    _brain_of,
    build_generator,
    generate,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    one_hot,
)
from gdfree.data.generative.quality import LabelledPatches, quality_report
from gdfree.data.label_maps import add_lesions, case_label_map, crop_label_map

__all__ = ["GenerativeConfig", "Synthesiser", "collect_patches", "fit_synthesiser", "train_generator"]


@dataclass(frozen=True)
class GenerativeConfig:
    """Synthetic patches in training batches (a YAML mapping ``generative:``).

    Attributes:
        kind: ``none`` (default), ``cvae`` or ``cgan``.
        fraction: share of training patches replaced by generated ones.
        steps, batch_size, lr, patch_size: training of the generator (on the training patients only).
        new_lesions: up to this many library lesions drawn into each synthetic patch's white matter.
        active_probability: chance that a drawn lesion is active (labelled enhancing).
    """

    kind: str = "none"
    fraction: float = 0.25
    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    patch_size: int = 32
    new_lesions: int = 2
    active_probability: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in GENERATORS:
            raise ValueError(f"generative.kind: expected one of {', '.join(GENERATORS)}, got {self.kind!r}")
        if not 0 <= self.fraction <= 1 or not 0 <= self.active_probability <= 1:
            raise ValueError("generative.fraction and active_probability: expected values in [0, 1]")
        if self.steps < 1 or self.batch_size < 1 or self.patch_size % 4 or self.new_lesions < 0:
            raise ValueError("generative: steps, batch_size >= 1, patch_size a multiple of 4, new_lesions >= 0")


def train_generator(
    kind: str, patches: LabelledPatches, *, steps: int, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
    beta: float = 0.01, l1: float = 10.0,
) -> tuple[nn.Module, list[dict[str, float]]]:  # fmt: skip
    """Train a ``kind`` generator on ``patches`` (each batch a uniform draw); returns (model in eval mode, loss
    rows per step: ``recon`` and ``kl`` for the cVAE, ``l1``, ``g_adv`` and ``d`` for the cGAN)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model: Any = build_generator(kind, patches.images.shape[1])
    model.train()
    rows: list[dict[str, float]] = []
    if kind == "cvae":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt_g = torch.optim.Adam(model.generator.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    for _ in range(steps):
        pick = rng.integers(len(patches.images), size=batch_size)
        x = torch.from_numpy(patches.images[pick])
        y = one_hot(patches.label_maps[pick])
        brain = _brain_of(y)
        if kind == "cvae":
            recon, mu, logvar = model(x, y)
            rec = (((recon - x) ** 2) * brain).sum() / brain.sum().clamp(min=1) / x.shape[1]
            kl = -0.5 * torch.mean(1 + logvar - mu**2 - logvar.exp())
            loss = rec + beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            rows.append({"recon": rec.item(), "kl": kl.item()})
        else:
            fake = model.generate(y) * brain
            d_loss = lsgan_discriminator_loss(model.discriminator, torch.cat([x, y], 1), torch.cat([fake, y], 1))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_adv = lsgan_generator_loss(model.discriminator, torch.cat([fake, y], 1))
            g_l1 = (torch.abs(fake - x) * brain).sum() / brain.sum().clamp(min=1) / x.shape[1]
            g_loss = g_adv + l1 * g_l1
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            rows.append({"l1": g_l1.item(), "g_adv": g_adv.item(), "d": d_loss.item()})
    model.eval()
    return model, rows


def collect_patches(
    cases: Sequence[Any], label_maps: Sequence[np.ndarray], heads: Sequence[str], patch_size: int, count: int,
    rng: np.random.Generator,
) -> LabelledPatches:  # fmt: skip
    """``count`` patches of ``cases`` (:class:`gdfree.data.cases.ArrayCase`) with their label maps, drawn as
    training draws them (lesions oversampled)."""
    from gdfree.data.sampling import PatchSampler, SamplingRatios

    sampler = PatchSampler(cases, heads, patch_size, SamplingRatios())
    images, maps = [], []
    for _ in range(count):
        params = sampler.sample_params(rng)
        images.append(sampler.crop(params)[0])
        maps.append(crop_label_map(sampler, params, label_maps[params.case]))
    return LabelledPatches(np.stack(images), np.stack(maps))


class Synthesiser:
    """Replaces a share of training patches by generated ones (see the module docstring).

    Args:
        cfg: the generative config. model: a trained generator. label_maps: one per training case, in the
            sampler's case order.
    """

    def __init__(self, cfg: GenerativeConfig, model: nn.Module, label_maps: Sequence[np.ndarray]) -> None:
        self.cfg, self.model, self.label_maps = cfg, model, list(label_maps)

    def maybe_replace(
        self, sampler: Any, params: Any, image: np.ndarray, target: np.ndarray, has: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """With probability ``cfg.fraction``, a generated patch (image, target) for the label map at ``params``
        with new lesions drawn in; else the real one."""
        if self.cfg.fraction <= 0 or rng.random() >= self.cfg.fraction:
            return image, target
        case = sampler.cases[params.case]
        label_map = add_lesions(crop_label_map(sampler, params, self.label_maps[params.case]), case.spacing_mm, rng,
                                count=self.cfg.new_lesions, active_probability=self.cfg.active_probability)  # fmt: skip
        with torch.no_grad():
            fake = generate(self.model, label_map[None], int(rng.integers(2**31)))[0]
        truth = {"lesion": label_map >= 4, "enhancing": label_map == 5}
        new_target = np.stack([truth[h].astype(np.float32) if has[i] and h in truth else target[i]
                               for i, h in enumerate(sampler.heads)])  # fmt: skip
        return fake, new_target


def fit_synthesiser(
    cfg: GenerativeConfig, train_cases: Sequence[Any], heldout_cases: Sequence[Any], modalities: Sequence[str],
    heads: Sequence[str], seed: int,
) -> tuple[Synthesiser, list[dict[str, float]], dict[str, Any] | None]:  # fmt: skip
    """Label maps of the training cases, a generator trained on their patches, and its quality report on
    patches of ``heldout_cases`` (None without held-out cases). Needs a T1w channel (tissue classes)."""
    if "T1w" not in modalities:
        raise ValueError("generative: the tissue label maps need a T1w input channel")
    t1 = list(modalities).index("T1w")

    def maps(cases: Sequence[Any]) -> list[np.ndarray]:
        return [case_label_map(c.image, c.brain, c.labels, t1, seed) for c in cases]

    rng = np.random.default_rng([seed, 17])
    train_maps = maps(train_cases)
    train = collect_patches(train_cases, train_maps, heads, cfg.patch_size, max(64, 4 * cfg.batch_size), rng)
    model, losses = train_generator(cfg.kind, train, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                                    seed=seed)  # fmt: skip
    report = None
    if heldout_cases:
        heldout = collect_patches(heldout_cases, maps(heldout_cases), heads, cfg.patch_size, 32, rng)
        report = quality_report(model, train, heldout, seed)
    return Synthesiser(cfg, model, train_maps), losses, report
