"""The multitask U-Net: a shared MONAI residual encoder-decoder with one 1x1x1 logit head per task.

Dropout is channel-wise (``Dropout3d``) and only in the decoder, so Monte Carlo dropout samples whole
feature maps (cheap: see DESIGN.md) while the encoder stays deterministic. With ``dropout_site="head"`` the one
dropout layer sits just before the linear 1x1x1 heads: a sample is then a matrix product of the shared features
(:meth:`MultitaskUNet.features`), and the mean sample logit is the deterministic logit exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

__all__ = ["MODELS", "MultitaskUNet", "build_model"]

DROPOUT_SITES = ("decoder", "head")
"""Where the network's dropout sits (its ``dropout_site``)."""


class MultitaskUNet(nn.Module):
    """A 3-D residual U-Net with a logit channel per head.

    Args:
        in_channels: input modalities.
        heads: names of the output channels, in order (e.g. ``("enhancing", "lesion")``).
        channels: feature channels per level, shallow to deep.
        strides: with len(channels) - 1 values, the first level runs at full resolution and each value
            is the stride between consecutive levels; with len(channels) values, the first value is a
            strided stem (as MONAI's ``UNet`` does), the network works from there at reduced resolution,
            and a transposed convolution brings ``full_res_channels`` features back to full resolution,
            where they meet the input through one residual unit. Full-resolution layers dominate the cost
            on a CPU (DESIGN.md); the stem keeps them thin.
        num_res_units: convolutions per residual unit in the encoder.
        dropout: channel-wise dropout probability in every decoder block (``dropout_site`` ``decoder``), or in
            one layer before the heads (``head``).
        dropout_site: where dropout sits (:data:`DROPOUT_SITES`).
        full_res_channels: feature channels at full resolution after a strided stem.
        norm: MONAI norm name.

    Shapes:
        input (B, in_channels, X, Y, Z) with X, Y, Z divisible by :attr:`divisor` (the product of strides);
        output (B, len(heads), X, Y, Z) logits.

    Examples:
        >>> net = MultitaskUNet(3, ("enhancing", "lesion"), channels=(4, 8), strides=(2, 2), full_res_channels=4)
        >>> net(torch.zeros(1, 3, 8, 8, 8)).shape
        torch.Size([1, 2, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        heads: Sequence[str] = ("enhancing", "lesion"),
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        dropout: float = 0.1,
        full_res_channels: int = 8,
        norm: str = "INSTANCE",
        dropout_site: str = "decoder",
    ) -> None:
        super().__init__()
        if dropout_site not in DROPOUT_SITES:
            raise ValueError(f"dropout_site: expected one of {', '.join(DROPOUT_SITES)}, got {dropout_site!r}")
        if len(strides) not in (len(channels) - 1, len(channels)):
            raise ValueError(
                f"strides: expected {len(channels) - 1} or {len(channels)} values for {len(channels)} levels, "
                f"got {tuple(strides)}"
            )
        if not heads:
            raise ValueError("heads: at least one head is needed")
        self.heads = tuple(heads)
        stem = strides[0] if len(strides) == len(channels) else 1
        between = list(strides[-(len(channels) - 1) :]) if len(channels) > 1 else []
        self.divisor = stem
        for s in between:
            self.divisor *= s
        units = max(num_res_units, 1)
        drop = (dropout or None) if dropout_site == "decoder" else None
        self.encoder = nn.ModuleList(
            [ResidualUnit(3, in_channels, channels[0], strides=stem, subunits=units, norm=norm)]
        )
        for c_in, c_out, s in zip(channels[:-1], channels[1:], between, strict=True):
            self.encoder.append(ResidualUnit(3, c_in, c_out, strides=s, subunits=units, norm=norm))
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for c_deep, c_skip, s in reversed(list(zip(channels[1:], channels[:-1], between, strict=True))):
            self.up.append(Convolution(3, c_deep, c_skip, strides=s, kernel_size=3, is_transposed=True, norm=norm))
            self.fuse.append(ResidualUnit(3, 2 * c_skip, c_skip, subunits=1, norm=norm, dropout=drop, dropout_dim=3))
        self.stem_up: nn.Module | None = None
        self.stem_fuse: nn.Module | None = None
        top = channels[0]
        if stem > 1:
            self.stem_up = Convolution(3, top, full_res_channels, strides=stem, kernel_size=3, is_transposed=True,
                                       norm=norm)  # fmt: skip
            self.stem_fuse = ResidualUnit(3, full_res_channels + in_channels, full_res_channels, subunits=1,
                                          norm=norm, dropout=drop, dropout_dim=3)  # fmt: skip
            top = full_res_channels
        self.head = nn.Conv3d(top, len(self.heads), kernel_size=1)
        self.head_dropout: nn.Dropout3d | None = (nn.Dropout3d(dropout) if dropout_site == "head" and dropout
                                                  else None)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x, self.encode(x))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features, shallow to deep. It holds no dropout, so MC dropout samples can share one
        encoding and repeat only :meth:`decode` (``forward(x) == decode(x, encode(x))``)."""
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        return skips

    def decode(self, image: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (B, heads, X, Y, Z) from the input ``image`` and its :meth:`encode` features (not modified)."""
        x = self.features(image, skips)
        return self.head(self.head_dropout(x) if self.head_dropout is not None else x)

    def features(self, image: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """What the heads read (B, C, X, Y, Z), before the head dropout of ``dropout_site="head"``."""
        block = self._last_block()
        x = self._last_input(image, skips)
        return block(x) if block is not None else x

    def _last_block(self) -> nn.Module | None:
        """The last decoder block (it holds the last dropout layer), or None for a one-level network."""
        if self.stem_fuse is not None:
            return self.stem_fuse
        return self.fuse[-1] if len(self.fuse) else None

    def _last_input(self, image: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """What the last decoder block receives."""
        skips = list(skips)
        x = skips.pop()
        pairs = list(zip(self.up, self.fuse, strict=True))
        if self.stem_up is None and pairs:
            *pairs, (last_up, _) = pairs
        for up, fuse in pairs:
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        if self.stem_up is not None:
            return torch.cat([self.stem_up(x), image], dim=1)
        return torch.cat([last_up(x), skips.pop()], dim=1) if len(self.fuse) else x

    def before_last_dropout(self, image: torch.Tensor, skips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(input of the last dropout layer, residual branch of its block): everything of the network that no
        dropout mask of that layer changes; :meth:`after_last_dropout` finishes the pass. Raises ValueError for a
        network whose last block is not a one-unit MONAI ResidualUnit with norm, dropout, activation in order."""
        block: Any = self._last_block()
        unit: Any = getattr(getattr(block, "conv", None), "unit0", None)
        adn = getattr(unit, "adn", None)
        if block is None or adn is None or len(block.conv) != 1 or [n for n, _ in adn.named_children()] != [
                "N", "D", "A"]:  # fmt: skip
            raise ValueError("before_last_dropout: the last decoder block is not a residual unit with norm, "
                             "dropout and activation")  # fmt: skip
        x = self._last_input(image, skips)
        return adn.N(unit.conv(x)), block.residual(x)

    def after_last_dropout(self, pre: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Logits from :meth:`before_last_dropout`'s tensors: dropout (as its mode says), activation, residual sum,
        heads (``decode == after_last_dropout(*before_last_dropout(...))``)."""
        block: Any = self._last_block()
        adn = block.conv.unit0.adn
        return self.head(adn.A(adn.D(pre)) + residual)


MODELS: dict[str, type[nn.Module]] = {"MultitaskUNet": MultitaskUNet}


def build_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Rebuild a network from its class name and keyword arguments (as stored in ``model.json``).

    Raises:
        ValueError: unknown class name or arguments it does not take.
    """
    if name not in MODELS:
        raise ValueError(f"model class {name!r} is not known; known: {', '.join(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"model {name}: bad arguments {kwargs} ({exc})") from exc
