"""Learned brain extraction: deepbet (Fisch et al. 2024, MIT licence), whose two networks ship inside its wheel.

Nothing is downloaded. The networks are TorchScript archives loaded with ``torch.jit.load``: TorchScript's own
unpickler rebuilds tensors and TorchScript modules only (it calls no Python function named in the file), and
before loading, each file's SHA-256 is checked against :data:`DEEPBET_SHA256` (the files of deepbet 1.0.2), so
a replaced file is refused. Without deepbet, or with other files, :func:`learned_brain_mask` raises
:class:`BrainExtractionUnavailable` and ``prepare`` falls back to the atlas registration.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.io.images import file_sha256
from gdfree.types import Volume

__all__ = ["DEEPBET_SHA256", "BrainExtractionUnavailable", "learned_brain_mask"]

DEEPBET_SHA256 = {
    "model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
    "bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
}
"""SHA-256 of the deepbet 1.0.2 network files (``<site-packages>/data/models/``)."""


class BrainExtractionUnavailable(RuntimeError):
    """deepbet is not installed, or its network files are not the pinned ones."""


@functools.lru_cache(maxsize=1)
def _extractor() -> Any:
    try:
        import deepbet.utils
        from deepbet.bet import BrainExtraction
    except ImportError as exc:
        raise BrainExtractionUnavailable(f"deepbet is not installed ({exc})") from None
    folder = Path(deepbet.utils.DATA_PATH) / "models"
    for name, expected in DEEPBET_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise BrainExtractionUnavailable(f"{path}: deepbet's network file is missing")
        if file_sha256(path) != expected:
            raise BrainExtractionUnavailable(f"{path}: not the pinned deepbet 1.0.2 network (SHA-256 differs); "
                                             "refusing to load it")  # fmt: skip
    import warnings

    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; deepbet 1.0.2 ships TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        return BrainExtraction(no_gpu=True, model_path=str(folder / "model.pt"),
                               bbox_model_path=str(folder / "bbox_model.pt"))  # fmt: skip


def learned_brain_mask(volume: Volume) -> np.ndarray:
    """Bool brain mask of a T1w head (skull on or off) on ``volume``'s grid, by deepbet (threshold 0.5, its
    largest component, holes filled).

    Raises:
        BrainExtractionUnavailable: deepbet missing or its files not the pinned ones.
        ValueError: the image is empty or deepbet's mask does not come back on the image's grid.
    """
    import nibabel as nib

    data = np.asarray(volume.data, dtype=np.float32)
    if not np.isfinite(data).all() or float(data.max() - data.min()) <= 0:
        raise ValueError(f"{volume.path or 'image'}: constant or non-finite image; no brain to extract")
    extractor = _extractor()
    try:
        _, mask, _ = extractor.run(nib.Nifti1Image(data, volume.affine))
    except (AssertionError, RuntimeError, ValueError, IndexError) as exc:  # deepbet asserts on an empty box
        reason = str(exc) or exc.__class__.__name__
        raise ValueError(f"{volume.path or 'image'}: deepbet found no brain ({reason})") from None
    out = np.asarray(mask.dataobj) > 0
    if out.shape != volume.shape:
        raise ValueError(f"deepbet returned a {out.shape} mask for a {volume.shape} image")
    return out
