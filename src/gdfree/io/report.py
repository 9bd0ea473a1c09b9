"""What a dataset holds, per case: modalities, labels, grids and problems (``gdfree info``).

Every file is read and checked as a command would read it (:func:`gdfree.io.images.read_volume`: readable,
3-D, numeric, finite, sane voxel size; masks binary, :func:`gdfree.io.images.read_mask`), so a case ``info``
calls usable does not fail later on its files. ``quick`` reads the headers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.errors import ImageReadError
from gdfree.io.adapters import discover
from gdfree.io.bids import CaseFiles, read_grid
from gdfree.io.images import read_mask, read_volume
from gdfree.types import spacing_from_affine

__all__ = ["CaseReport", "describe_case", "describe_dataset", "print_report"]


@dataclass
class CaseReport:
    """One row of a dataset report."""

    case_id: str
    source: str
    images: list[str]
    masks: list[str]
    shape: tuple[int, ...] | None
    spacing_mm: tuple[float, ...] | None
    problems: list[str] = field(default_factory=list)
    unusable: bool = False
    """A file cannot be used or a required modality is missing (other grids are a problem, not unusable)."""


def describe_case(files: CaseFiles, required: tuple[str, ...], quick: bool = False) -> CaseReport:
    """Check a case's files (``quick``: their headers only) and list what is missing or inconsistent."""
    problems = list(files.problems)
    missing = files.missing(required)
    unusable = bool(missing) or not files.images
    if missing and files.images:
        problems.append("missing required " + ", ".join(missing))
    grids: dict[str, tuple[tuple[int, ...], np.ndarray]] = {}
    for role, path in [*files.images.items(), *((f"mask:{k}", v) for k, v in files.masks.items())]:
        try:
            if quick:
                grids[role] = read_grid(path)
            else:
                volume = read_mask(path) if role.startswith("mask:") else read_volume(path)
                grids[role] = (volume.shape, volume.affine)
        except ImageReadError as exc:
            problems.append(str(exc))
            unusable = True
    shape = spacing = None
    if grids:
        ref_role, (ref_shape, ref_affine) = next(iter(grids.items()))
        shape = ref_shape
        spacing = tuple(round(s, 3) for s in spacing_from_affine(ref_affine))
        for role, (shp, aff) in grids.items():
            if len(shp) < 3 or (len(shp) > 3 and any(n != 1 for n in shp[3:])):
                problems.append(f"{role}: {len(shp)}-D image of shape {shp}, expected 3-D")
                unusable = True
            if shp[:3] != ref_shape[:3] or not np.allclose(aff, ref_affine, atol=1e-3):
                problems.append(f"{role} is on another grid than {ref_role} (shape {shp} vs {ref_shape})")
    return CaseReport(files.case_id, files.source, sorted(files.images), sorted(files.masks), shape, spacing, problems,
                      unusable)  # fmt: skip


def describe_dataset(
    root: Path | str, fmt: str = "auto", required: tuple[str, ...] = (), quick: bool = False
) -> list[CaseReport]:
    """Discover a dataset and describe every case."""
    return [describe_case(files, required, quick) for files in discover(root, fmt)]


def print_report(rows: list[CaseReport], root: Path | str, console: Any) -> None:
    """Print the report as a rich table, then a one-line summary."""
    from rich.table import Table

    table = Table(title=f"{root}: {len(rows)} cases")
    for col in ("case", "images", "masks", "grid", "problems"):
        table.add_column(col, overflow="fold")
    for r in rows:
        grid = (
            ""
            if r.shape is None
            else "x".join(map(str, r.shape)) + " @ " + "x".join(f"{s:g}" for s in r.spacing_mm or ())
        )
        table.add_row(
            r.case_id, " ".join(r.images) or "-", " ".join(r.masks) or "-", grid,
            "[yellow]" + "; ".join(r.problems) + "[/]" if r.problems else "[green]ok[/]",
        )  # fmt: skip
    console.print(table)
    n_bad = sum(bool(r.problems) for r in rows)
    n_unusable = sum(r.unusable for r in rows)
    console.print(f"{len(rows)} cases, {len(rows) - n_bad} without problems, {n_bad} with problems, "
                  f"{n_unusable} unusable.")  # fmt: skip
