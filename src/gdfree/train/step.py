"""One optimisation step as a pure function of (model, optimiser, batch): what AMP and DDP wrap.

:func:`train_step` runs the forward pass (in bfloat16 autocast on CUDA when ``amp``), the masked multitask
loss in float32, the backward pass and the optimiser step, and returns the loss. Under DDP every rank holds
its own part of the global batch: the logits are gathered across ranks with a differentiable all-gather (and
the targets with a plain one), so every rank computes the loss of the *global* batch, exactly as one process
would; DDP then averages the parameter gradients. Batch Dice pools its sums over the whole batch, which a
mean of per-rank losses would not, so this is what makes N ranks equal one process with the same global
batch (tested).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gdfree.devices import bf16_supported
from gdfree.train.losses import multitask_loss
from gdfree.train.translation import TranslationConfig

__all__ = ["LossSpec", "gather_batch", "train_step"]


@dataclass(frozen=True)
class LossSpec:
    """What the loss needs besides the tensors (:func:`gdfree.train.losses.multitask_loss`)."""

    heads: tuple[str, ...]
    weights: tuple[float, ...]
    kind: str = "dice_ce"
    t1_channel: int | None = None
    translation: TranslationConfig | None = None


def gather_batch(logits: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The global batch from every rank's part, in rank order: ``logits`` through a differentiable all-gather
    (its gradient flows back to the rank that computed each part), the other ``tensors`` through a plain one.
    Every rank must pass parts of the same shape."""
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the public autograd gather
        warnings.simplefilter("ignore", FutureWarning)
        gathered = [torch.cat(all_gather(logits))]
    for tensor in tensors:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        gathered.append(torch.cat(parts))
    return tuple(gathered)


def train_step(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    batch: Sequence[torch.Tensor],
    spec: LossSpec,
    *,
    amp: bool = False,
    cpu_bf16: bool = False,
    channels_last: bool = False,
    distributed: bool = False,
    extra: Callable[..., Any] | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """One step on ``batch`` = (images, targets, present), already on the model's device.

    Args:
        model: the network (a DDP wrapper when ``distributed``).
        amp: bfloat16 autocast for the forward pass on CUDA (ignored elsewhere). bfloat16 keeps float32's range,
            so no gradient scaler is needed; the loss is float32.
        cpu_bf16: on a CPU with bfloat16 units (AVX512-BF16 or AMX: :func:`gdfree.devices.bf16_supported`),
            bfloat16 autocast with channels-last tensors; float32 elsewhere.
        channels_last: channels-last tensors on the CPU in float32 too (another summation order, same arithmetic).
        distributed: the loss is computed on the batch gathered from every rank (see the module docstring).
        extra: ``extra(images, logits, targets, present)`` -> None or (a term added to the loss, its parts)
            (the adversarial loss of the ``t1gd`` head; it steps its own discriminator).

    Returns:
        (loss of the global batch, per-head loss values, the logits of this rank's part).
    """
    x, y, present = batch
    model.train()
    on_cpu = x.device.type == "cpu"
    use_amp = (amp and x.device.type == "cuda") or (cpu_bf16 and on_cpu and bf16_supported("cpu"))
    if on_cpu and (use_amp or channels_last):  # the CPU's kernels (oneDNN) run fastest on channels-last 3-D tensors
        model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # accepted at run time
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        out = model(x)
    logits = out.float()
    if distributed:
        logits, x, y, present = gather_batch(logits, x, y, present)
    loss, parts = multitask_loss(logits, y, present, spec.heads, spec.weights, spec.kind, inputs=x,
                                 t1_channel=spec.t1_channel, translation=spec.translation)  # fmt: skip
    if extra is not None:
        added = extra(x, logits, y, present)
        if added is not None:
            loss = loss + added[0]
            parts.update(added[1])
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss.detach(), parts, out.detach()


def unwrap(model: torch.nn.Module) -> Any:
    """The network inside a DDP wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)
