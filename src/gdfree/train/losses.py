"""Losses per head with label masks: a sample without a label contributes nothing to that head.

Each head's loss is computed over the samples of the batch that carry its label only (MONAI's batch Dice
on the sigmoid, plus binary cross-entropy or MONAI's focal loss); a head no sample carries adds a zero that
is not connected to its parameters, so they receive no gradient from it. The ``t1gd`` head is a regression:
its logits are the synthetic post-Gd T1w, scored by :func:`gdfree.train.translation.translation_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gdfree.data.translation import TRANSLATION_HEAD
from gdfree.train.translation import TranslationConfig, translation_loss

__all__ = ["LOSSES", "multitask_loss"]

LOSSES = ("dice_ce", "dice_focal")


def multitask_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    present: torch.Tensor,
    heads: Sequence[str],
    weights: Sequence[float],
    kind: str = "dice_ce",
    *,
    inputs: torch.Tensor | None = None,
    t1_channel: int | None = None,
    translation: TranslationConfig | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum over heads of Dice + CE (or focal), each over the samples that have the label.

    Args:
        logits, targets: (B, H, X, Y, Z); targets in {0, 1} (the ``t1gd`` head: the target image).
        present: (B, H) bool, whether sample b has label h.
        heads, weights: names and weights of the H heads.
        kind: ``dice_ce`` or ``dice_focal``.
        inputs, t1_channel, translation: the input batch, its T1w channel and the ``t1gd`` loss options
            (needed only with a ``t1gd`` head).

    Returns:
        (total loss, per-head loss values; NaN for a head without any label in the batch).
    """
    from monai.losses import DiceLoss, FocalLoss

    if kind not in LOSSES:
        raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {kind!r}")
    dice = DiceLoss(sigmoid=True, batch=True)
    total = logits.new_zeros(())
    parts: dict[str, float] = {}
    for h, (name, weight) in enumerate(zip(heads, weights, strict=True)):
        rows = present[:, h]
        if not bool(rows.any()):
            parts[name] = float("nan")
            continue
        lg, tg = logits[rows, h : h + 1], targets[rows, h : h + 1]
        if name == TRANSLATION_HEAD:
            if inputs is None or t1_channel is None:
                raise ValueError(f"multitask_loss: the {TRANSLATION_HEAD} head needs inputs and t1_channel")
            loss = translation_loss(lg, tg, inputs[rows, t1_channel : t1_channel + 1],
                                    translation or TranslationConfig())  # fmt: skip
            parts[name] = float(loss.detach())
            total = total + weight * loss
            continue
        if kind == "dice_ce":
            second = F.binary_cross_entropy_with_logits(lg, tg)
        else:
            second = FocalLoss(gamma=2.0, use_softmax=False)(lg, tg)
        loss = dice(lg, tg) + second
        parts[name] = float(loss.detach())
        total = total + weight * loss
    return total, parts
