"""A case as the network sees it: stacked, normalised input channels, labels per head, brain mask.

Normalisation (recorded in every model, chosen in the training config): over the brain mask (the dataset's
``desc-brain_mask`` if it has one, else the voxels that are non-zero in every input, which suits
skull-stripped images), each channel is either

- ``zscore-brain-clip5`` (the default): z-scored over the brain, clipped to [-5, 5];
- ``nawm-mode-clip8``: referenced to normal-appearing white matter: its histogram mode
  (:func:`gdfree.arrays.histogram_mode` inside the eroded brain, :func:`gdfree.arrays.nawm_mask`) is 0 and the
  brain's robust spread about that mode (1.4826 x the median absolute deviation) is the unit, clipped to
  [-8, 8]. The mean and standard deviation of a brain move with its lesion load (patient19's 50 ml of bright
  FLAIR lesions); white matter's mode and spread hardly do, so a lesion is as many units above white matter on
  every exam;
- ``wm-ratio-clip10``: each channel as a ratio to its white-matter level, (x / WM - 1) / 0.25, clipped to
  [-10, 10]. White matter is found on the T1w channel (the brightest of three k-means classes there,
  :func:`white_matter`), and each channel's level is its median over those voxels; an
  input set without T1w takes each channel's histogram mode inside the eroded brain. The phantom's contrasts
  are ratios to white matter measured on real exams, so a lesion has the same value on a phantom and on a
  real exam whatever else (cerebrospinal fluid, grey matter, the brain mask's extent) the two brains hold; a
  brain z-score divides by the brain's spread, which the phantom has at half a real brain's (docs/real_lesions.md);

and set to 0 outside the brain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gdfree.arrays import histogram_mode, mask_stats, nawm_mask, spacing_from_affine, tissue_map, zscore
from gdfree.data.translation import TRANSLATION_HEAD, translation_target
from gdfree.io.bids import CaseFiles, load_case
from gdfree.io.images import file_sha256
from gdfree.types import PAIR_ROLES, POST_CONTRAST, Volume, check_input_modalities, exam_roles

__all__ = ["NORMALISATION", "NORMALISATIONS", "WM_RATIO", "ArrayCase", "channel_reference", "check_normalisation",
           "file_fingerprints", "load_array_case", "normalise", "white_matter"]  # fmt: skip

NORMALISATION = "zscore-brain-clip5"
"""Name of the default normalisation above, stored in model.json and applied at prediction."""

WM_RATIO = "wm-ratio-clip10"
"""Name of the white-matter ratio normalisation above."""

WM_RATIO_UNIT = 0.25
"""One unit of :data:`WM_RATIO`: a quarter of the white-matter level."""

NORMALISATIONS = {NORMALISATION: 5.0, "nawm-mode-clip8": 8.0, WM_RATIO: 10.0}
"""The input normalisations a model may record, with the value each clips to."""

DIFFERENCE_UNIT = 2.0
"""The ``diffFLAIR`` channel (already in noise units, 0 where nothing changed) is divided by this under every
normalisation, then clipped like the others: a new lesion (5-20 noise units) stays below the clip."""


def check_normalisation(name: str) -> str:
    """``name`` if it is a known normalisation, else ValueError listing them."""
    if name not in NORMALISATIONS:
        raise ValueError(f"normalisation: expected one of {', '.join(NORMALISATIONS)}, got {name!r}")
    return name


@dataclass
class ArrayCase:
    """One exam as arrays on its own grid.

    Attributes:
        case_id, subject, session: identity; dataset: index of the dataset in the training config.
        image: (C, X, Y, Z) float32, channels in ``modalities`` order.
        labels: head -> (X, Y, Z) bool, or None when the case has no such label.
        brain: (X, Y, Z) bool.
        affine: 4x4 voxel -> RAS mm. fingerprints: SHA-256 of each input file.
        raw_zero: per channel, the normalised value that raw intensity 0 would have (an empty acquisition).
        raw_stats: per channel, the raw brain mean and standard deviation it was z-scored with (to write
            an image predicted in normalised units back in the input's intensity scale).

    The ``t1gd`` label, when asked for, is a float32 image, not a mask: the post-Gd T1w in the T1w channel's
    normalised units (:func:`gdfree.train.translation.translation_target`).
    """

    case_id: str
    subject: str
    session: str | None
    image: np.ndarray
    labels: dict[str, np.ndarray | None]
    brain: np.ndarray
    affine: np.ndarray
    dataset: int = 0
    fingerprints: tuple[str, ...] = field(default_factory=tuple)
    raw_zero: tuple[float, ...] = ()
    raw_stats: tuple[tuple[float, float], ...] = ()

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return spacing_from_affine(self.affine)


def white_matter(image: np.ndarray, brain: np.ndarray, modalities: Sequence[str]) -> np.ndarray | None:
    """White matter as the T1w channel of (C, X, Y, Z) ``image`` shows it: the brightest class of a 3-class
    k-means of the brain (:func:`gdfree.arrays.tissue_map`; white matter is T1w's brightest tissue); None
    without a T1w channel or when fewer than 100 voxels qualify."""
    if "T1w" not in modalities:
        return None
    wm = tissue_map(image[list(modalities).index("T1w")], brain) == 3
    return wm if wm.sum() >= 100 else None


def channel_reference(
    channel: np.ndarray, brain: np.ndarray, normalisation: str = NORMALISATION, wm: np.ndarray | None = None
) -> tuple[float, float]:
    """(centre, unit) of one 3-D channel under ``normalisation`` (see the module docstring): the brain's mean and
    standard deviation; white matter's mode and the brain's robust spread about it; or white matter's level
    (the median over ``wm``, :func:`white_matter`, when given) and a quarter of it."""
    if check_normalisation(normalisation) == NORMALISATION:
        return mask_stats(channel, brain)
    if normalisation == WM_RATIO and wm is not None:
        level = float(np.median(channel[wm]))
        return level, WM_RATIO_UNIT * abs(level) or 1e-6
    values = channel[brain]
    inner = nawm_mask(brain)
    mode = histogram_mode(channel[inner] if inner.sum() > 100 else values)
    if normalisation == WM_RATIO:  # no T1w to find white matter on: the channel's own NAWM mode
        return mode, WM_RATIO_UNIT * abs(mode) or 1e-6
    spread = float(1.4826 * np.median(np.abs(values - mode))) or float(values.std()) or 1e-6
    return mode, spread


def normalise(
    image: np.ndarray, brain: np.ndarray, normalisation: str = NORMALISATION,
    stats: Sequence[tuple[float, float]] | None = None, modalities: Sequence[str] = (),
) -> np.ndarray:  # fmt: skip
    """Each channel of (C, X, Y, Z) ``image`` normalised over ``brain`` by ``normalisation`` (module docstring),
    clipped, 0 outside the brain; ``stats``: each channel's :func:`channel_reference` when already computed;
    ``modalities``: the channels' roles (white matter for ``wm-ratio-clip10`` comes from the T1w one)."""
    out = np.zeros(image.shape, np.float32)
    if not brain.any():
        return out
    clip = NORMALISATIONS[check_normalisation(normalisation)]
    wm = white_matter(image, brain, modalities) if stats is None and normalisation == WM_RATIO else None
    for c in range(image.shape[0]):
        reference = stats[c] if stats is not None else channel_reference(image[c], brain, normalisation, wm)
        out[c] = zscore(image[c], brain, stats=reference, clip=(-clip, clip))
    return out


def file_fingerprints(paths: Sequence[Path]) -> tuple[str, ...]:
    """SHA-256 of each file's bytes: identical input files mean the same exam, whatever the folder."""
    return tuple(file_sha256(p) for p in paths)


def _channel(images: dict[str, Volume], role: str) -> np.ndarray:
    """One input channel as float32; a prior-exam role the exam lacks reads "nothing changed" (:data:`PAIR_ROLES`):
    the prior is the exam's own FLAIR and the difference 0."""
    if role in images:
        return np.asarray(images[role].data, np.float32)
    if role == "priorFLAIR":
        return np.asarray(images["FLAIR"].data, np.float32)
    return np.zeros(images["FLAIR"].shape, np.float32)


def load_array_case(
    files: CaseFiles,
    modalities: Sequence[str],
    heads: Sequence[str] = (),
    *,
    oracle: bool = False,
    dataset: int = 0,
    label_sets: Sequence[str] | None = None,
    normalisation: str = NORMALISATION,
) -> ArrayCase:
    """Read and normalise one case (``normalisation``: one of :data:`NORMALISATIONS`).

    Args:
        files: the discovered case.
        modalities: input roles, in channel order; a post-contrast role raises InputRoleError unless
            ``oracle``. Prior-exam roles (:data:`gdfree.types.PAIR_ROLES`) the case lacks read "nothing changed"
            (:func:`_channel`); the difference is scaled by :data:`DIFFERENCE_UNIT`, not by its own statistics.
        heads: label roles wanted; a head the case lacks, or that is not in ``label_sets`` (the labels the
            config says this dataset provides), is None. ``t1gd`` reads the post-Gd T1w as the translation
            target (needs ``T1w`` among ``modalities``).
        oracle: allow the post-Gd T1w as an input (the upper-bound reference only).

    Raises:
        InputRoleError, MissingModalityError (naming the case), GridMismatchError, ValueError (empty brain,
            or an input constant over the brain).
    """
    modalities = check_input_modalities(modalities, oracle=oracle)
    allowed = set(heads if label_sets is None else label_sets)
    wanted_masks = [h for h in heads if h in allowed and h in files.masks]
    masks = [*wanted_masks, *(["brain"] if "brain" in files.masks else [])]
    translate = TRANSLATION_HEAD in heads and TRANSLATION_HEAD in allowed and POST_CONTRAST in files.images
    if translate and "T1w" not in modalities:
        raise ValueError(f"{files.case_id}: the {TRANSLATION_HEAD} head needs T1w among the inputs")
    extra = [POST_CONTRAST] if translate and POST_CONTRAST not in modalities else []
    case = load_case(files, modalities=[*modalities, *extra], masks=masks, required=exam_roles(modalities))
    first = case.images[exam_roles(modalities)[0]]
    image = np.stack([_channel(case.images, m) for m in modalities])
    if "brain" in case.masks:
        brain = np.asarray(case.masks["brain"].data, bool)
    else:
        brain = np.all(image[[c for c, m in enumerate(modalities) if m not in PAIR_ROLES]] != 0, axis=0)
    if not brain.any():
        raise ValueError(f"{files.case_id}: the brain mask is empty ({files.masks.get('brain', 'derived')})")
    for c, m in enumerate(modalities):
        inside = image[c][brain]
        if m != "diffFLAIR" and inside.min() == inside.max():
            raise ValueError(f"{files.images[m]}: constant ({inside.min():g}) over the whole brain; an empty or "
                             "failed acquisition, nothing to predict from")  # fmt: skip
    labels = {h: (np.asarray(case.masks[h].data, bool) if h in case.masks else None) for h in heads}
    if TRANSLATION_HEAD in heads:
        labels[TRANSLATION_HEAD] = None
        if translate:
            t1 = image[list(modalities).index("T1w")]
            labels[TRANSLATION_HEAD] = translation_target(t1, np.asarray(case.images[POST_CONTRAST].data), brain)
    wm = white_matter(image, brain, modalities) if normalisation == WM_RATIO else None
    stats = [(0.0, DIFFERENCE_UNIT) if m == "diffFLAIR" else channel_reference(image[c], brain, normalisation, wm)
             for c, m in enumerate(modalities)]  # fmt: skip
    clip = NORMALISATIONS[normalisation]
    return ArrayCase(
        case_id=files.case_id,
        subject=files.subject,
        session=files.session,
        image=normalise(image, brain, normalisation, stats),
        labels=labels,
        brain=brain,
        affine=first.affine,
        dataset=dataset,
        fingerprints=file_fingerprints(files.input_paths(modalities)),
        raw_zero=tuple(float(np.clip(-centre / unit, -clip, clip)) for centre, unit in stats),
        raw_stats=tuple((float(centre), float(unit)) for centre, unit in stats),
    )
