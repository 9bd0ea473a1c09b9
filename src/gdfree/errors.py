"""Exceptions raised by gdfree.

Every error about a file names the file; every error about an argument names the argument and
the value that was expected.
"""

from __future__ import annotations

__all__ = [
    "GdfreeError",
    "GridMismatchError",
    "ImageReadError",
    "InputRoleError",
    "MissingModalityError",
]


class GdfreeError(Exception):
    """Base class of every error gdfree raises on purpose."""


class ImageReadError(GdfreeError, ValueError):
    """An image file cannot be read or is not a single 3-D volume."""


class GridMismatchError(GdfreeError, ValueError):
    """Images that must share one voxel grid do not."""


class MissingModalityError(GdfreeError, KeyError):
    """A required modality or mask is absent from a case."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


class InputRoleError(GdfreeError, ValueError):
    """A post-contrast image was asked for as a model input outside the ``oracle`` configuration."""
