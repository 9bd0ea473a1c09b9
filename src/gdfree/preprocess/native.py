"""Prepared outputs back on each exam's acquired grid (``space-orig``), through the transforms ``prepare`` saved:
:func:`to_native` maps one volume, :func:`outputs_to_native` a whole ``predict`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gdfree.io.bids import bids_name, derivative_path, parse_entities
from gdfree.io.images import from_sitk, image_suffix, read_volume, to_sitk, write_volume
from gdfree.io.tables import write_tsv
from gdfree.preprocess.layout import PIPELINE
from gdfree.preprocess.record import PrepareRecord
from gdfree.preprocess.registration import read_transform, resample
from gdfree.types import Volume

__all__ = ["outputs_to_native", "to_native"]


def to_native(volume: Volume, record_path: Path | str, role: str, interpolation: str = "nearest") -> Volume:
    """Map a volume on a prepared case's output grid (a prediction, a mask) back onto the native grid of one
    of its input images, through that image's saved transform; ``interpolation`` as in :func:`resample`.

    Raises:
        ValueError: the volume is not on the case's output grid, or the case has no image of ``role``.
    """

    record_path = Path(record_path)
    record = PrepareRecord.read(record_path)
    grid = record.output_grid
    expected = Volume(np.zeros(grid["shape"], np.uint8), np.asarray(grid["affine"]))
    if not volume.same_grid(expected):
        raise ValueError(f"{volume.path or 'volume'}: not on the output grid of {record.case} ({record_path})")
    if role not in record.native_grid:
        raise ValueError(f"{record.case} has no {role} image; it has {', '.join(record.native_grid)}")
    native = record.native_grid[role]
    target = to_sitk(Volume(np.zeros(native["shape"], np.float32), np.asarray(native["affine"])))
    if role == record.reference:
        transform = None
    else:
        transform = read_transform(_output_root(record_path) / record.outputs[f"xfm_{role}"])
    moved = from_sitk(resample(to_sitk(volume, np.float32), target, transform, interpolation=interpolation,
                               inverse=True))  # fmt: skip
    return moved.with_data(moved.data.astype(volume.data.dtype, copy=False))


def outputs_to_native(
    predictions: Path | str, prepared: Path | str, out: Path | str, role: str | None = None
) -> list[dict[str, Any]]:
    """Map every NIfTI of a ``predict`` output folder back onto the grid each exam was acquired on.

    For each ``predictions/sub-X/[ses-Y/]anat/*.nii.gz``, the case's ``_prepare.json`` in ``prepared`` gives the
    output grid and the transform of ``role`` (default: the prepare reference, usually the acquired FLAIR);
    probabilities, uncertainties and images are resampled linearly, masks and label maps (``_mask``, ``_dseg``)
    nearest-neighbour. Written as ``out/sub-X/.../<name with space-orig>`` plus ``out/native.tsv`` (one row per
    file: source, destination, role, interpolation). ``out`` may not overlap either input.

    Returns:
        the rows of native.tsv (a case without a prepare record, or with no image of ``role``, gets a row with
        its ``error`` and the others go on).

    Raises:
        OutputConflictError: ``out`` overlaps an input or holds files no earlier to-native wrote.
        FileNotFoundError: no predicted NIfTI found.
        PairingError: the predictions were made from other images than ``prepared``'s.
    """
    from gdfree.io.adapters import discover
    from gdfree.io.owned import claim_folder, mark_folder
    from gdfree.io.pairing import check_pairing
    from gdfree.io.runs import check_output_folder

    predictions, prepared = Path(predictions), Path(prepared)
    out = check_output_folder(out, [predictions, prepared])
    files = sorted(p for p in predictions.rglob("sub-*") if p.is_file() and image_suffix(p) in (".nii.gz", ".nii"))
    if not files:
        raise FileNotFoundError(f"{predictions}: no sub-*.nii.gz files (a gdfree predict output folder)")
    try:
        prepared_cases = discover(prepared)
    except (ValueError, FileNotFoundError):  # no prepared dataset there: each file says "no prepare record"
        prepared_cases = []
    check_pairing(predictions, prepared, prepared_cases, "--prepared")
    foreign = claim_folder(out, "to-native")
    rows: list[dict[str, Any]] = []
    for path in files:
        ent = parse_entities(path.name)
        if ent is None or "sub" not in ent:
            continue
        record = derivative_path(prepared / "derivatives" / PIPELINE, ent["sub"], ent.get("ses"), "prepare", ".json")
        row: dict[str, Any] = {"source": str(path), "destination": "", "role": "", "interpolation": "", "error": ""}
        rows.append(row)
        if not record.is_file():
            row["error"] = f"no prepare record {record}"
            continue
        interpolation = "nearest" if ent["suffix"] in ("mask", "dseg") else "linear"
        try:
            target_role = role or PrepareRecord.read(record).reference  # a damaged record fails this file only
            native = to_native(read_volume(path), record, target_role, interpolation=interpolation)
        except (ValueError, OSError, RuntimeError) as exc:  # a missing or unreadable transform: this file only
            row["error"] = " ".join(str(exc).split()) or type(exc).__name__  # one line: a TSV cell
            continue
        names = {k: v for k, v in ent.items() if k not in ("suffix", "extension")}
        names["space"] = "orig"
        target = out / path.parent.relative_to(predictions) / bids_name(names, ent["suffix"], ent["extension"])
        write_volume(native, target)
        row.update(destination=str(target.relative_to(out)), role=target_role, interpolation=interpolation)
    write_tsv(out / "native.tsv", rows)
    mark_folder(out, "to-native", foreign)
    return rows


def _output_root(record_path: Path) -> Path:
    """The prepare output folder of a ``derivatives/gdfree-prepare/sub-X/[ses-Y/]anat/*_prepare.json``."""
    for parent in record_path.parents:
        if parent.name == "derivatives":
            return parent.parent
    raise ValueError(f"{record_path}: not inside a derivatives/{PIPELINE} folder")
