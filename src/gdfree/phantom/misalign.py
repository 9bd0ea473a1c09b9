"""A misaligned copy of a BIDS cohort: chosen modalities moved by known random rigid transforms.

The voxels are not resampled: each moved image keeps its array and gets a new placement in space (header
only), so the truth is exact. Registering a moved image back onto an unmoved one must find the saved matrix
(LPS, reference points -> moved points, as an ITK transform from the reference to the moved image).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.io.images import atomic_path
from gdfree.io.tables import write_json

__all__ = ["misalign_cohort"]


def misalign_cohort(
    src: Path | str,
    dest: Path | str,
    roles: Sequence[str] = ("T1w", "T2w", "T1gd"),
    *,
    degrees: tuple[float, float] = (5.0, 10.0),
    mm: tuple[float, float] = (5.0, 10.0),
    seed: int = 0,
) -> dict[str, dict[str, list[list[float]]]]:
    """Copy the BIDS dataset ``src`` to ``dest`` and move every image of ``roles`` (``T1gd`` = any ``ce-`` T1w)
    by a rigid transform with per-axis angles and shifts drawn uniformly in ``degrees``/``mm``, random signs.

    Returns (and writes to ``dest/misalignment.json``): case id -> role -> 4x4 LPS matrix.

    Raises:
        FileExistsError: ``dest`` exists and is not empty.
    """
    import SimpleITK as sitk

    from gdfree.io.adapters import discover
    from gdfree.preprocess.registration import move_image, rigid_matrix

    src, dest = Path(src), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: not empty")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    rng = np.random.default_rng(seed)
    moves: dict[str, Any] = {}
    for case in discover(dest):
        for role in roles:
            if role not in case.images:
                continue
            path = case.images[role]
            img = sitk.ReadImage(str(path))
            centre = img.TransformContinuousIndexToPhysicalPoint(((np.asarray(img.GetSize()) - 1) / 2).tolist())
            angles = rng.uniform(*degrees, 3) * rng.choice([-1, 1], 3)
            shifts = rng.uniform(*mm, 3) * rng.choice([-1, 1], 3)
            move = rigid_matrix(angles, shifts, centre)
            with atomic_path(path) as tmp:
                sitk.WriteImage(move_image(img, move), str(tmp))
            moves.setdefault(case.case_id, {})[role] = move.tolist()
    write_json(dest / "misalignment.json", {"seed": seed, "degrees": list(degrees), "mm": list(mm), "moves": moves})
    return moves
