"""Colour tables so gdfree's label images open sensibly in ITK-SNAP, FSLeyes and 3D Slicer.

A label image's table is written beside it under the image's own stem, one file per viewer:

    <stem>.tsv          BIDS dseg look-up table (index, name, color as #rrggbb)
    <stem>.itksnap.txt  ITK-SNAP label description (Segmentation > Import Label Descriptions)
    <stem>.lut          FSLeyes lookup table (``fsleyes img.nii.gz -ot label -l <stem>.lut``)
    <stem>.ctbl         3D Slicer colour table (load it, then pick it as the label map's colour node)

For ``desc-all_dseg`` (every visible lesion, numbered as in ``desc-all_lesions.tsv``) each lesion is named with
its ``p_active`` and coloured by it (red: predicted active; blue to yellow: inactive, by probability); for a
binary mask the one label is named after what it marks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gdfree.io.images import write_text

__all__ = ["Label", "label_stem", "lesion_labels", "mask_labels", "write_colour_tables"]

MASK_COLOURS = {"enhancing": (230, 30, 30), "lesion": (0, 200, 230), "reference": (255, 220, 0), "brain": (60, 170, 60)}
"""The colour of each mask kind, the same in the reports, the viewer and the colour tables."""

MASK_NAMES = {
    "enhancing": "predicted enhancing lesion",
    "lesion": "predicted lesion (any)",
    "reference": "reference lesion",
    "brain": "brain",
}


@dataclass(frozen=True)
class Label:
    """One label value: ``index`` > 0, a display ``name`` and an RGB colour (0-255)."""

    index: int
    name: str
    rgb: tuple[int, int, int]


def label_stem(image: Path) -> Path:
    """The image path without ``.nii.gz`` / ``.nii``: the colour tables' common stem."""
    name = image.name
    for ext in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if name.endswith(ext):
            return image.with_name(name[: -len(ext)])
    return image.with_suffix("")


def mask_labels(kind: str) -> list[Label]:
    """The single label of a binary mask of ``kind`` (enhancing, lesion, brain or any other name)."""
    return [Label(1, MASK_NAMES.get(kind, kind), MASK_COLOURS.get(kind, (255, 200, 0)))]


def _probability_colour(p: float) -> tuple[int, int, int]:
    """Blue (p = 0) through yellow (p near the threshold) for inactive lesions."""
    p = min(max(p, 0.0), 1.0)
    return int(40 + 215 * p), int(90 + 150 * p), int(230 - 200 * p)


def lesion_labels(rows: Sequence[dict[str, object]]) -> list[Label]:
    """One label per row of a ``desc-all_lesions.tsv`` (lesion_id, p_active, predicted_active)."""
    labels = []
    for row in rows:
        p = float(str(row.get("p_active", "nan")))
        active = str(row.get("predicted_active", "")).lower() == "true"
        name = f"lesion {row['lesion_id']} p_active {p:.2f}" + (" (active)" if active else "")
        labels.append(Label(int(str(row["lesion_id"])), name, (230, 30, 30) if active else _probability_colour(p)))
    return labels


def _clean(name: str) -> str:
    """A name fit for the whitespace- and quote-delimited formats (tabs, newlines and quotes removed)."""
    return " ".join(name.replace('"', "'").split())


def write_colour_tables(image: Path, labels: Sequence[Label]) -> list[Path]:
    """Write the four colour tables of ``image`` (see the module docstring); returns their paths."""
    stem = label_stem(image)
    rows = [(lab.index, _clean(lab.name), lab.rgb) for lab in labels]
    bids = "index\tname\tcolor\n" + "".join(f"{i}\t{n}\t#{r:02x}{g:02x}{b:02x}\n" for i, n, (r, g, b) in rows)
    itk = ("################################################\n# ITK-SnAP Label Description File (gdfree)\n"
           "# IDX -R- -G- -B- -A-- VIS MSH LABEL\n################################################\n"
           '    0   0   0   0    0   0   0 "Clear Label"\n'
           + "".join(f'{i:5d} {r:3d} {g:3d} {b:3d}    1   1   1 "{n}"\n' for i, n, (r, g, b) in rows))  # fmt: skip
    lut = "".join(f"{i} {r / 255:.4f} {g / 255:.4f} {b / 255:.4f} {n}\n" for i, n, (r, g, b) in rows)
    slicer = "# Color table file (gdfree)\n0 background 0 0 0 0\n" + "".join(
        f"{i} {n.replace(' ', '_')} {r} {g} {b} 255\n" for i, n, (r, g, b) in rows
    )
    return [write_text(stem.with_name(stem.name + ext), text) for ext, text in (
        (".tsv", bids), (".itksnap.txt", itk), (".lut", lut), (".ctbl", slicer))]  # fmt: skip
