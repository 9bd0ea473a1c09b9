"""Brain masks: the policy (:class:`BrainMaskPolicy`, checked once) and its three sources, the dataset's own
mask, the atlas registered onto the case (:func:`atlas_brain_mask`) and learned extraction by deepbet (Fisch et
al. 2024, MIT licence), whose two networks ship inside its wheel.

Nothing is downloaded. The networks are TorchScript archives loaded with ``torch.jit.load``: TorchScript's own
unpickler rebuilds tensors and TorchScript modules only (it calls no Python function named in the file), and
before loading, each file's SHA-256 is checked against :data:`DEEPBET_SHA256` (the files of deepbet 1.0.2), so
a replaced file is refused. Without deepbet, or with other files, :func:`learned_brain_mask` raises
:class:`BrainExtractionUnavailable` and ``prepare`` falls back to the atlas registration.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.io.images import file_sha256, from_sitk, to_sitk
from gdfree.metrics.voxel import dice
from gdfree.preprocess.registration import RegistrationConfig, register, resample
from gdfree.types import Volume

__all__ = ["BRAIN_MASKS", "DEEPBET_SHA256", "BrainExtractionUnavailable", "BrainMaskPolicy", "atlas_brain_mask",
           "choose_brain_mask", "learned_brain_mask"]  # fmt: skip

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


class BrainMaskPolicy(StrEnum):
    """Where a case's brain mask comes from; checked once, when :class:`PrepareConfig` is made (the CLI, the YAML
    and the pipeline all go through it)."""

    AUTO = "auto"
    """provided, else learned from the T1w by deepbet, else the atlas"""
    PROVIDED = "provided"
    """the dataset's own mask; a case without one fails"""
    LEARNED = "learned"
    """deepbet on the T1w; a case where it fails fails"""
    ATLAS = "atlas"
    """the MNI brain registered to the reference"""

    @classmethod
    def parse(cls, value: str | BrainMaskPolicy) -> BrainMaskPolicy:
        """The policy named ``value``. Raises ValueError naming the allowed values."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"brain_mask: expected one of {allowed}, got {value!r}") from None


BRAIN_MASKS = tuple(p.value for p in BrainMaskPolicy)


def atlas_brain_mask(image: Any, config: RegistrationConfig | None = None) -> tuple[Any, Any]:
    """Brain mask of ``image`` (SimpleITK, any T1w/T2w/FLAIR) from nilearn's shipped MNI152 2009 T1 template
    and its brain mask, registered (rigid + affine, mutual information) onto the image; no download.

    Returns:
        (uint8 SimpleITK mask on the image grid, the template -> image transform).
    """
    import SimpleITK as sitk

    from gdfree.io.templates import template_maps

    maps = template_maps(2)
    template = to_sitk(Volume(maps.gm * 0.7 + maps.wm + maps.csf * 0.2, maps.affine))
    brain = to_sitk(Volume(maps.brain, maps.affine))
    transform = register(image, template, config or RegistrationConfig(shrink=(4, 2), smooth_mm=(4.0, 2.0)))
    warped = resample(brain, image, transform, interpolation="linear")
    return sitk.Cast(warped >= 0.5, sitk.sitkUInt8), transform


def choose_brain_mask(
    case_id: str,
    policy: BrainMaskPolicy,
    check: bool,
    resampled: dict[str, np.ndarray],
    affine: np.ndarray,
    reference: str,
    provided: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """(brain mask, record entries, log line) by ``policy``: provided, else deepbet on the T1w, else the
    atlas; with a provided mask and ``check_brain_mask``, the other two's Dice against it."""
    if policy == BrainMaskPolicy.PROVIDED and provided is None:
        raise ValueError(f"{case_id}: brain_mask 'provided' but the case has no brain mask")
    info: dict[str, Any] = {}
    learned = None
    if policy in (BrainMaskPolicy.LEARNED, BrainMaskPolicy.AUTO) and (provided is None or check):
        if "T1w" in resampled:
            try:
                learned = learned_brain_mask(Volume(resampled["T1w"], affine))
            except (BrainExtractionUnavailable, ValueError) as exc:
                info["brain_mask_learned_error"] = str(exc)
        else:
            info["brain_mask_learned_error"] = "deepbet needs a T1w; the case has none"
        if provided is not None and learned is not None:
            info["brain_mask_dice_learned_vs_provided"] = round(dice(learned, provided), 4)
    atlas = None
    if policy == BrainMaskPolicy.ATLAS or (provided is None and learned is None) or (
            provided is not None and check):  # fmt: skip
        atlas = from_sitk(atlas_brain_mask(to_sitk(Volume(resampled[reference], affine)))[0]).data > 0
        if provided is not None:
            info["brain_mask_dice_atlas_vs_provided"] = round(dice(atlas, provided), 4)
    if policy == BrainMaskPolicy.ATLAS or (provided is None and learned is None and policy != BrainMaskPolicy.LEARNED):
        mask, source = atlas, "atlas"
    elif provided is not None and policy != BrainMaskPolicy.LEARNED:
        mask, source = provided, "provided"
    elif learned is not None:
        mask, source = learned, "learned (deepbet)"
    else:
        raise ValueError(f"{case_id}: brain_mask 'learned' failed: {info['brain_mask_learned_error']}")
    assert mask is not None
    info["brain_mask_source"] = source
    checks = [f"{k.split('_')[3]} vs provided Dice {v}" for k, v in info.items() if k.endswith("_vs_provided")]
    fallback = f" (learned failed: {info['brain_mask_learned_error']})" if "brain_mask_learned_error" in info else ""
    return mask, info, source + "".join(", " + c for c in checks) + fallback
