"""Generative synthesis of annotated training patches: a conditional VAE and a conditional GAN.

Both map a label map (background, CSF, GM, WM, lesion, active lesion; :data:`LABELS`) to multi-contrast
image patches with the training images' channels. They are trained inside gdfree on the training patients'
patches (:func:`train_generator`); in training (``generative:`` in the YAML, :class:`GenerativeConfig`) a
share of patches is then replaced by a synthetic one: the label map of a real training patch, with new
lesions from the phantom's library of real lesion shapes drawn into its white matter (each active with
``active_probability``), rendered by the generator. The labels of the new patch are its label map's, so
every synthetic patch is annotated by construction.

- cVAE (Kingma et al. 2014, Sohn et al. 2015): encoder q(z | x, y) to a 4-channel latent at a quarter of the
  resolution; decoder p(x | z, y) from the latent and the label map; loss: squared error in the brain plus
  ``beta`` x KL. Samples draw z ~ N(0, I).
- cGAN (pix2pix, Isola et al. 2017): a MONAI U-Net generator from the label map and two noise channels; a
  PatchGAN discriminator on (image, label map); least-squares adversarial loss plus ``l1`` x L1 to the real
  patch in the brain.

Tissue classes of a real case come from a 3-class k-means of its T1w channel in the brain outside lesions
(CSF darkest, WM brightest): an approximation, not a segmentation. :func:`quality_report` checks a trained
generator: per-class intensity statistics against held-out real patches, the test accuracy of a small
discriminator trained to tell generated from held-out real patches, and a nearest-neighbour distance to the
training patches against that to held-out patches (a generator that copies its training data sits near 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from scipy import ndimage
from torch import nn

__all__ = [
    "GENERATORS", "LABELS", "ConditionalGAN", "ConditionalVAE", "GenerativeConfig", "LabelledPatches",
    "Synthesiser", "add_lesions", "build_generator", "case_label_map", "collect_patches", "crop_label_map",
    "fit_synthesiser", "generate", "lsgan_discriminator_loss", "lsgan_generator_loss", "one_hot",
    "patch_discriminator", "quality_report", "train_generator",
]  # fmt: skip

LABELS = ("background", "CSF", "GM", "WM", "lesion", "active")
"""Label-map values 0..5 (``active``: an enhancing lesion voxel)."""
GENERATORS = ("none", "cvae", "cgan")


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


def case_label_map(
    image: np.ndarray, brain: np.ndarray, labels: dict[str, np.ndarray | None], t1_channel: int, seed: int = 0
) -> np.ndarray:
    """(X, Y, Z) uint8 label map of one case (values of :data:`LABELS`): tissues by a 3-class k-means of the
    T1w channel in the brain outside lesions, then lesion and active voxels from the labels."""
    from sklearn.cluster import KMeans

    lesion = labels.get("lesion")
    enhancing = labels.get("enhancing")
    lesion_any = np.zeros(brain.shape, bool)
    for lab in (lesion, enhancing):
        if lab is not None:
            lesion_any |= lab
    tissue = brain & ~lesion_any
    out = np.zeros(brain.shape, np.uint8)
    values = image[t1_channel][tissue].reshape(-1, 1)
    if values.shape[0] >= 3:
        sample = values[np.random.default_rng(seed).permutation(values.shape[0])[:20000]]
        km = KMeans(3, n_init=3, random_state=seed).fit(sample)
        order = np.argsort(km.cluster_centers_[:, 0])  # darkest CSF, then GM, then WM on T1w
        rank = np.empty(3, np.uint8)
        rank[order] = np.arange(1, 4, dtype=np.uint8)
        out[tissue] = rank[km.predict(values)]
    if lesion is not None:
        out[lesion & brain] = 4
    if enhancing is not None:
        out[enhancing & brain] = 5
    return out


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


@dataclass
class LabelledPatches:
    """Real training patches: images (N, C, P, P, P) float32 and label maps (N, P, P, P) uint8."""

    images: np.ndarray
    label_maps: np.ndarray


def _brain_of(y_onehot: torch.Tensor) -> torch.Tensor:
    return 1.0 - y_onehot[:, :1]


def train_generator(
    kind: str, patches: LabelledPatches, *, steps: int, batch_size: int = 4, lr: float = 1e-3, seed: int = 0,
    beta: float = 0.01, l1: float = 10.0,
) -> tuple[nn.Module, list[dict[str, float]]]:  # fmt: skip
    """Train a ``kind`` generator on ``patches`` (each batch a uniform draw); returns (model in eval mode, loss
    rows per step: ``recon`` and ``kl`` for the cVAE, ``l1``, ``g_adv`` and ``d`` for the cGAN)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_generator(kind, patches.images.shape[1])
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


@torch.no_grad()
def generate(model: nn.Module, label_maps: np.ndarray, seed: int) -> np.ndarray:
    """Images (N, C, P, P, P) float32 for label maps (N, P, P, P), zero outside the brain, from ``seed``."""
    y = one_hot(label_maps)
    out = model.sample(y, torch.Generator().manual_seed(int(seed))) * _brain_of(y)
    return out.numpy().astype(np.float32)


def add_lesions(
    label_map: np.ndarray, spacing_mm: Sequence[float], rng: np.random.Generator, *, count: int,
    active_probability: float,
) -> np.ndarray:  # fmt: skip
    """Draw up to ``count`` library lesions (real shapes, random flips and axis order) wholly inside the white
    matter of a label map (value 3), each labelled lesion (4) or, with ``active_probability``, active (5)."""
    from gdfree.data.lesion_sim import fits_inside, library_shape
    from gdfree.phantom.lesions import lesion_library

    out = label_map.copy()
    n_shapes = len(lesion_library())
    for _ in range(int(rng.integers(count + 1)) if count else 0):
        wm = out == 3
        candidates = np.argwhere(ndimage.binary_erosion(wm))
        if not candidates.size:
            break
        flips, order = [bool(f) for f in rng.random(3) < 0.5], [int(a) for a in rng.permutation(3)]
        shape = library_shape(int(rng.integers(n_shapes)), spacing_mm, flips, order)
        points = np.argwhere(shape)
        if not points.size:  # a lesion smaller than half a voxel at this spacing
            continue
        offset = candidates[rng.integers(len(candidates))] - np.round(points.mean(axis=0)).astype(int)
        value = 5 if rng.random() < active_probability else 4
        if fits_inside(points + offset, wm):
            out[tuple((points + offset).T)] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# quality checks


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


# ---------------------------------------------------------------------------------------------------------
# in training


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


def crop_label_map(sampler: Any, params: Any, label_map: np.ndarray) -> np.ndarray:
    """The label map of the patch at ``params`` (background outside the volume)."""
    src, dst = sampler.windows(params)
    out = np.zeros((sampler.patch,) * 3, np.uint8)
    out[dst] = label_map[src]
    return out


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
