"""Signed attribution maps for one lesion (or region) of a segmentation network, with Captum.

The target is the mean ``enhancing`` logit over the lesion (:class:`~gdfree.explain.targets.RegionTarget`),
computed on a cube around it (``crop`` voxels; the network is fully convolutional, so only the border of
the cube sees less context than the whole volume). Maps are signed: positive = evidence for enhancement.

- ``ig``: integrated gradients from the all-zero image (the in-brain mean of every z-scored modality),
  one map per modality;
- ``occlusion``: the target's drop when a block of ``block`` voxels of one modality is set to 0, over the
  central ``occlusion_reach`` voxels of the cube (blocks farther out are not tried), one map per modality;
- ``gradcam``: Seg-Grad-CAM (Vinogradova et al. 2020): channel weights = mean gradient of the target over
  a layer's feature map, map = weighted sum of the features, not rectified (signed), trilinearly
  upsampled; one map for all modalities. The default layer is the last decoder block (half resolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gdfree.data.cases import ArrayCase
from gdfree.explain.targets import RegionTarget, crop_around, padded_crop, to_tensor

__all__ = ["METHODS", "lesion_maps", "overlay_png", "resolve_layer"]

METHODS = ("ig", "occlusion", "gradcam")


def resolve_layer(model: nn.Module, name: str | None) -> nn.Module:
    """A layer of ``model`` by its dotted name (``encoder.3``, ``fuse.2``); None picks the last decoder block
    (``fuse[-1]``: half resolution behind a strided stem) or, without a decoder, the last encoder block.

    Raises:
        ValueError: no such layer (the message lists some names).
    """
    if name is None:
        for attr in ("fuse", "encoder"):
            blocks = getattr(model, attr, None)
            if blocks is not None and len(blocks):
                return blocks[-1]
        raise ValueError("gradcam: this model has no 'fuse' or 'encoder' blocks; name a layer")
    modules = dict(model.named_modules())
    if name not in modules:
        raise ValueError(f"gradcam layer {name!r} not in the model; some layers: {', '.join(list(modules)[1:12])}")
    return modules[name]


def _place(local: np.ndarray, box: Sequence[slice], shape: Sequence[int]) -> np.ndarray:
    """Put a crop's map (..., *crop) back on the full grid (zeros elsewhere)."""
    out = np.zeros((*local.shape[:-3], *shape), np.float32)
    src = tuple(slice(0, min(b.stop, n) - b.start) for b, n in zip(box, shape, strict=True))
    dst = tuple(slice(b.start, min(b.stop, n)) for b, n in zip(box, shape, strict=True))
    into: tuple[Any, ...] = (..., *dst)
    out_of: tuple[Any, ...] = (..., *src)
    out[into] = local[out_of]
    return out


def lesion_maps(
    model: nn.Module,
    case: ArrayCase,
    region: np.ndarray,
    *,
    head: int = 0,
    methods: Sequence[str] = METHODS,
    crop: int = 48,
    steps: int = 32,
    block: int = 4,
    occlusion_reach: int = 16,
    layer: str | None = None,
    device: Any = "cpu",
) -> dict[str, np.ndarray]:
    """Signed maps of ``methods`` for the mean ``head`` logit over ``region``, on the case's full grid:
    ``ig`` and ``occlusion`` (C, X, Y, Z), ``gradcam`` (X, Y, Z); plus ``target`` (the target's value,
    shape ()) and, for ``ig``, ``ig_delta`` (Captum's convergence delta).

    Raises:
        ValueError: unknown method, empty region.
    """
    from captum.attr import FeatureAblation, IntegratedGradients, LayerAttribution, LayerGradCam

    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"attribution methods: unknown {bad}; expected some of {', '.join(METHODS)}")
    model.eval()
    divisor = int(getattr(model, "divisor", 1))
    box = crop_around(region, crop, divisor)
    x = to_tensor(padded_crop(case.image, box), device)
    local = padded_crop(region[None].astype(np.float32), box)[0]
    target = RegionTarget(model, head, local).to(device)
    shape = case.brain.shape
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        out["target"] = np.asarray(float(target(x)[0]))
    if "ig" in methods:
        attr, delta = IntegratedGradients(target).attribute(
            x, baselines=torch.zeros_like(x), n_steps=steps, internal_batch_size=4, return_convergence_delta=True
        )
        out["ig"] = _place(attr[0].detach().cpu().numpy(), box, shape)
        out["ig_delta"] = np.asarray(float(delta.abs().max()))
    if "occlusion" in methods:
        feature = np.full(x.shape[1:], -1, np.int64)
        side = x.shape[2:]
        reach = min(occlusion_reach, *side)  # a crop smaller than the reach is occluded whole
        centre = [int(np.mean(np.nonzero(local)[a])) for a in range(3)]
        lo = [max(0, min(c - reach // 2, s - reach)) for c, s in zip(centre, side, strict=True)]
        grid = [np.arange(reach) // block for _ in range(3)]
        nb = int(np.ceil(reach / block))
        ids = (grid[0][:, None, None] * nb + grid[1][None, :, None]) * nb + grid[2][None, None, :]
        for c in range(x.shape[1]):
            sl: tuple[Any, ...] = (c, *(slice(a, a + reach) for a in lo))
            feature[sl] = ids + c * nb**3
        rest = feature < 0
        feature[rest] = x.shape[1] * nb**3  # everything outside the reach: one feature, never reported
        mask = torch.from_numpy(feature)[None].to(device)
        attr = FeatureAblation(target).attribute(x, baselines=0.0, feature_mask=mask, perturbations_per_eval=8)
        occ = attr[0].detach().cpu().numpy()
        occ[rest] = 0.0
        out["occlusion"] = _place(occ, box, shape)
    if "gradcam" in methods:
        cam = LayerGradCam(target, resolve_layer(model, layer))
        attr = cam.attribute(x, relu_attributions=False)
        up = LayerAttribution.interpolate(attr, tuple(x.shape[2:]), interpolate_mode="trilinear")
        out["gradcam"] = _place(up[0, 0].detach().cpu().numpy(), box, shape)
    return out


def overlay_png(
    path: Path | str,
    case: ArrayCase,
    modalities: Sequence[str],
    region: np.ndarray,
    maps: dict[str, np.ndarray],
    title: str = "",
) -> Path:
    """One row per method, one column per modality: the axial slice through the region's centre, the image
    in grey, the signed map in red (for enhancement) / blue (against) over it, the region outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdfree.io.images import save_figure

    z = round(float(np.mean(np.nonzero(region)[2])))
    where = np.nonzero(region[:, :, z])
    cx, cy = (int(np.mean(w)) for w in where)
    half = 20
    xs = slice(max(cx - half, 0), cx + half)
    ys = slice(max(cy - half, 0), cy + half)
    rows = [m for m in METHODS if m in maps]
    cols = len(modalities)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.2 * len(rows) + 0.4), squeeze=False)
    for r, method in enumerate(rows):
        data = maps[method]
        lim = float(np.abs(data).max()) or 1.0
        for c, modality in enumerate(modalities):
            ax = axes[r][c]
            if data.ndim == 3 and c > 0:  # one map for all modalities: drawn over the first only
                ax.axis("off")
                continue
            image = case.image[c][xs, ys, z]
            ax.imshow(np.rot90(image), cmap="gray", vmin=-3, vmax=3)
            layer = (data[c] if data.ndim == 4 else data)[xs, ys, z]
            shown = np.ma.masked_where(np.abs(layer) < 0.05 * lim, layer)  # hide what is near zero
            ax.imshow(np.rot90(shown), cmap="bwr", vmin=-lim, vmax=lim, alpha=0.6)
            ax.contour(np.rot90(region[xs, ys, z].astype(float)), levels=[0.5], colors="k", linewidths=0.7)
            ax.set_title(f"{method}: {modality if data.ndim == 4 else 'all inputs'}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title or f"{case.case_id}: attributions (red = for enhancement), z={z}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
