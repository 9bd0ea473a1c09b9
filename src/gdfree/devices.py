"""The compute device, chosen once (``--device``) and checked before any work starts."""

from __future__ import annotations

import re

__all__ = ["check_device"]


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
