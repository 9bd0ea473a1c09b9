"""The forward pass: sigmoid probabilities (or logits) of every head for one whole exam.

The exam goes through the network in one call when it fits, else in overlapping tiles (MONAI's sliding
window with Gaussian blending). Everything that samples predictions or applies a trained model's
calibration builds on :func:`predict_volume`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["MAX_WHOLE_VOXELS", "OUTSIDE_LOGIT", "InstanceNormChannelsLast", "box_margin", "channels_last_network",
           "fov_independent", "predict_volume", "predict_volume_samples"]  # fmt: skip

OUTSIDE_LOGIT = -30.0
"""The logit given to voxels outside the predicted box (probability 1e-13: not lesion)."""

MAX_WHOLE_VOXELS = 10_000_000
"""Above this many (padded) voxels, inference runs in overlapping tiles with Gaussian blending. A 1 mm MNI
exam pads to 192x224x192 = 8.3 M voxels and runs whole: 2.3 GB peak RSS (measured with the demo model)."""


def box_margin(model: nn.Module) -> int:
    """The margin (voxels) a brain box needs so that a field-of-view independent network gives on it exactly the
    masks of the whole volume: 1.5 of its deepest voxel (the product of its strides). Measured on the batch-norm
    network of docs/inference.md (divisor 16, 20 phantom test patients): margin 4 or 8 voxels, enhancing mask
    Dice 0.76 against the whole volume (the zero padding at the box's edge reaches far at the deepest level);
    16, 0.993; 24, 1.0."""
    divisor = int(getattr(model, "divisor", 1))
    return max(4, divisor + divisor // 2)


def fov_independent(model: nn.Module) -> bool:
    """Whether a voxel's output does not depend on how much of the exam the network is given (no layer
    normalises by statistics of its input: batch norm in eval mode, or no normalisation), so a brain box or
    tiles equal the whole volume inside the brain up to the zero padding's reach."""
    if not isinstance(model, nn.Module):  # a wrapped export (ONNX) says what its network was
        return bool(getattr(model, "fov_independent", False))
    return not any(isinstance(m, (nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm))
                   for m in model.modules())  # fmt: skip


class InstanceNormChannelsLast(nn.Module):
    """Instance norm that leaves a channels-last tensor channels-last (``torch.nn.InstanceNorm3d`` copies it to the
    default layout and back around every call: a third of a channels-last pass on the CPU).

    For one image, batch norm's batch statistics are the image's own, and torch's CPU batch norm has a channels-last
    kernel; a batch of several goes through group norm with one group per channel (the same statistics). Both sum
    in another order than instance norm: on 2.4 M voxels whose mean is six times their spread, normalised
    activations within 1.8e-3 (batch norm) and 5e-3 (group norm) of a float64 reference, instance norm's 5e-7.
    """

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm) -> None:
        super().__init__()
        if norm.track_running_stats:
            raise ValueError("InstanceNormChannelsLast: running statistics are not supported")
        self.channels, self.eps = norm.num_features, norm.eps
        self.weight = norm.weight if norm.affine else None
        self.bias = norm.bias if norm.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return nn.functional.group_norm(x, self.channels, self.weight, self.bias, self.eps)


def channels_last_network(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in channels-last layout with every instance norm replaced by
    :class:`InstanceNormChannelsLast` (``precision`` ``fp32-cl``); ``model`` itself is left as it is."""
    import copy

    fast = copy.deepcopy(model)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.modules.instancenorm._InstanceNorm):
                setattr(module, name, InstanceNormChannelsLast(child))
            else:
                swap(child)

    swap(fast)
    return fast.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # accepted at run time


def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    device: str | torch.device = "cpu",
    *,
    max_whole_voxels: int = MAX_WHOLE_VOXELS,
    tile: int = 128,
    overlap: float = 0.25,
    temperature: float | Sequence[float] = 1.0,
    logits_only: bool = False,
    crop: tuple[slice, ...] | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Sigmoid probabilities of every head for one (C, X, Y, Z) image, shape (H, X, Y, Z) float32.

    ``precision`` ``bf16`` runs the network under bfloat16 autocast with channels-last tensors (the CPU's matrix
    units); ``fp32-cl`` runs :func:`channels_last_network` in float32 (channels-last convolutions, no layout copies
    around the norms; ``gdfree bench`` with the shipped network: probabilities within 1.7e-3 of ``fp32`` at 2 mm
    and 1.4e-2 at 1 mm, largest difference over the volume, lesion masks at Dice 1.0 and 0.998). Temperatures,
    the sigmoid and the result stay float32.

    ``temperature`` (one value, or one per head) divides the logits first (temperature scaling fitted on
    validation patients); ``logits_only=True`` returns the raw logits instead of probabilities.

    ``crop`` (e.g. :func:`gdfree.arrays.bounding_box` of the brain) runs the network on that box only; outside
    it the logits are
    :data:`OUTSIDE_LOGIT` (probability ~0). Only a :func:`fov_independent` network gives the same values
    inside the box as on the whole volume.

    The image is zero-padded to a multiple of the network's divisor; if that fits ``max_whole_voxels`` it
    goes through in one call, else MONAI's sliding window (``tile``^3, ``overlap``, Gaussian blending).
    The model's mode is left as it is (eval for a deterministic prediction, train for an MC dropout sample).
    """
    if crop is not None:
        inner = predict_volume(model, np.ascontiguousarray(image[(slice(None), *crop)]), device,
                               max_whole_voxels=max_whole_voxels, tile=tile, overlap=overlap, temperature=temperature,
                               logits_only=logits_only, precision=precision)  # fmt: skip
        full = np.full((inner.shape[0], *image.shape[1:]), OUTSIDE_LOGIT if logits_only else 0.0, np.float32)
        full[(slice(None), *crop)] = inner
        return full
    divisor = int(getattr(model, "divisor", 1))
    shape = image.shape[1:]
    padded = [int(math.ceil(s / divisor) * divisor) for s in shape]
    x = np.zeros((1, image.shape[0], *padded), np.float32)
    x[0, :, : shape[0], : shape[1], : shape[2]] = image
    tensor = torch.from_numpy(x).to(device)
    if precision not in ("fp32", "fp32-cl", "bf16"):
        raise ValueError(f"precision: expected fp32, fp32-cl or bf16, got {precision!r}")
    bf16 = precision == "bf16"
    if bf16:
        model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # accepted at run time
    elif precision == "fp32-cl":
        model = channels_last_network(model)
    if precision != "fp32":
        tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
    device_type = torch.device(device).type
    with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        if math.prod(padded) <= max_whole_voxels:
            logits = model(tensor)
        else:
            from monai.inferers import sliding_window_inference

            roi = tuple(min(tile, p) for p in padded)
            logits = sliding_window_inference(tensor, roi, 1, model, overlap=overlap, mode="gaussian")
    out = logits[0].float()
    if not logits_only:
        temps = torch.as_tensor(np.broadcast_to(np.asarray(temperature, np.float32), (out.shape[0],)).copy())
        out = torch.sigmoid(out / temps.to(out.device).view(-1, 1, 1, 1))
    return out.cpu().numpy()[(slice(None), *(slice(0, s) for s in shape))]


def predict_volume_samples(
    model: nn.Module,
    image: np.ndarray,
    n: int,
    device: str | torch.device = "cpu",
    *,
    max_whole_voxels: int = MAX_WHOLE_VOXELS,
    temperature: float | Sequence[float] = 1.0,
    layers: str = "all",
    into: np.ndarray | None = None,
    expectation: bool = False,
) -> list[np.ndarray] | None:
    """``n`` MC dropout samples of :func:`predict_volume` (the model's dropout layers already in train mode)
    that run the encoder once and only the decoder ``n`` times: a network with ``encode``/``decode`` (its
    dropout all in the decoder) and a volume that goes through whole. The decoder draws its dropout masks in
    the order full passes would, so the samples equal ``n`` full passes after the same seed. ``layers``
    ``last`` (only the last dropout layer in train mode) runs everything before that layer once and repeats
    only what follows it (the activation, residual sum and 1x1x1 heads: almost nothing). None when the model
    or the volume does not allow it (then call :func:`predict_volume` ``n`` times). With ``into`` (n, H, X, Y, Z)
    float32, the samples are written there (no second copy of them) and the list holds its rows.

    ``expectation``: one more entry after the samples (not written into ``into``), the probability the samples scatter
    around: for a network whose only sampled dropout is its head dropout (``dropout_site="head"``) the sigmoid of
    the expected logit, which is the deterministic pass exactly (the heads are linear after the dropout, scaled
    by 1 / (1 - p)); otherwise the mean of the samples."""
    encode, decode = getattr(model, "encode", None), getattr(model, "decode", None)
    divisor = int(getattr(model, "divisor", 1))
    shape = image.shape[1:]
    padded = [int(math.ceil(s / divisor) * divisor) for s in shape]
    if encode is None or decode is None or math.prod(padded) > max_whole_voxels:
        return None
    if any(m.training for m in _encoder_modules(model) if isinstance(m, nn.modules.dropout._DropoutNd)):
        return None  # dropout in the encoder: each sample needs its own encoding
    x = np.zeros((1, image.shape[0], *padded), np.float32)
    x[0, :, : shape[0], : shape[1], : shape[2]] = image
    tensor = torch.from_numpy(x).to(device)
    samples: list[np.ndarray] = []
    head = _sampled_head_dropout(model)
    with torch.no_grad():
        skips = encode(tensor)
        if head is not None:
            features = model.features(tensor, skips)  # type: ignore[operator]
            del skips
        elif layers == "last":
            try:
                parts = model.before_last_dropout(tensor, skips)  # type: ignore[operator]
            except (AttributeError, ValueError):
                return None
            del skips
        temps = torch.as_tensor(np.atleast_1d(np.asarray(temperature, np.float32)).copy()).to(tensor.device)

        def probability(logits: torch.Tensor) -> np.ndarray:
            out = torch.sigmoid(logits.float() / temps.expand(logits.shape[0]).view(-1, 1, 1, 1))
            return out.cpu().numpy()[(slice(None), *(slice(0, s) for s in shape))]

        for _ in range(n):
            if head is not None:
                logits = _head_sample(model, head, features)
            else:
                logits = model.after_last_dropout(*parts) if layers == "last" else decode(tensor, skips)  # type: ignore[operator]
            sample = probability(logits[0])
            if into is not None:
                into[len(samples)] = sample
                sample = into[len(samples)]
            samples.append(sample)
        if expectation:  # the deterministic pass behind a head dropout; the mean behind nonlinear layers
            samples.append(probability(model.head(features)[0]) if head is not None  # type: ignore[operator]
                           else np.asarray(np.mean(samples, axis=0, dtype=np.float32)))  # fmt: skip
    return samples


def _sampled_head_dropout(model: nn.Module) -> nn.modules.dropout._DropoutNd | None:
    """The model's head dropout (``dropout_site="head"``) when it is the only dropout layer sampling, else None."""
    head = getattr(model, "head_dropout", None)
    if not isinstance(head, nn.modules.dropout._DropoutNd) or not head.training or head.p <= 0:
        return None
    others = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m is not head]
    return None if any(m.training and m.p > 0 for m in others) else head


def _head_sample(model: nn.Module, head: nn.modules.dropout._DropoutNd, features: torch.Tensor) -> torch.Tensor:
    """One sample of the heads' logits (B, H, X, Y, Z) behind channel-wise dropout of ``features``: the dropout
    mask is drawn as :func:`torch.nn.functional.dropout3d` draws it (one Bernoulli per batch item and channel,
    scaled by 1 / (1 - p)), and folded into the 1x1x1 heads' weights instead of scaling the features."""
    conv: nn.Conv3d = model.head  # type: ignore[assignment]
    b, c = features.shape[:2]
    if b != 1:
        raise ValueError(f"_head_sample: one exam at a time, got a batch of {b}")
    keep = features.new_empty((b, c, 1, 1, 1)).bernoulli_(1 - head.p).div_(1 - head.p)
    weight = conv.weight * keep.view(1, c, 1, 1, 1)
    return torch.nn.functional.conv3d(features, weight, conv.bias)


def _encoder_modules(model: nn.Module) -> list[nn.Module]:
    encoder = getattr(model, "encoder", None)
    return list(encoder.modules()) if isinstance(encoder, nn.Module) else list(model.modules())
