"""The compute device, chosen once (``--device``) and checked before any work starts."""

from __future__ import annotations

import functools
import re

__all__ = ["PRECISIONS", "bf16_supported", "check_device", "check_precision"]

PRECISIONS = ("fp32", "fp32-cl", "bf16", "auto")
"""Inference arithmetic: float32; float32 in channels-last layout with channels-last instance norms
(:func:`gdfree.models.forward.channels_last_network`: the same arithmetic summed in another order); bfloat16 autocast
with channels-last tensors (the CPU's matrix units, or a GPU's); ``auto``: bfloat16 where :func:`bf16_supported`,
else ``fp32-cl`` on a CPU and ``fp32`` on a GPU."""


def check_device(device: str) -> str:
    """Return ``device`` if this machine can run on it: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ValueError: an unknown device name, CUDA asked for on a machine (or torch build) without it, or a
            GPU index this machine does not have.
    """
    name = device.strip().lower()
    if name == "cpu":
        return name
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return name


@functools.lru_cache(maxsize=8)
def bf16_supported(device: str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that says so, or a CPU with AVX512-BF16 or AMX
    (asked of torch once per device kind; False when torch cannot tell)."""
    import torch

    if str(device).startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def check_precision(precision: str, device: str = "cpu") -> str:
    """The arithmetic :data:`PRECISIONS` names for ``precision`` on ``device`` (``auto`` resolved).

    Raises:
        ValueError: another name.
    """
    name = precision.strip().lower()
    if name not in PRECISIONS:
        raise ValueError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if name == "auto":
        return "bf16" if bf16_supported(device) else ("fp32-cl" if device == "cpu" else "fp32")
    return name
