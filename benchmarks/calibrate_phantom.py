"""Measure tissue and lesion contrasts of the shared real cases, to calibrate the phantom's defaults.

Uses open_ms_data patient07 and patient19 (MNI space, skull-stripped, N4-corrected; Lesjak et al. 2017,
CC-BY). Tissue classes come from a 3-class k-means of each patient's own T1w inside the brain (lesions
excluded), eroded by one voxel; the template's maps fit these patients' anatomy too loosely (patient19 is
atrophic) to measure contrasts from them. Prints, per modality,
the median intensity of GM, CSF and consensus lesions relative to normal-appearing WM, and a noise
estimate (robust std of the difference of neighbouring voxels in WM / sqrt(2), relative to WM).

With ``--lesions FILE`` it also writes each consensus lesion's own contrast (the phantom's ``lesion_contrasts:
real-lesions`` draws from it, :func:`gdfree.phantom.config.real_lesion_contrasts`): per lesion of at least
``MIN_LESION_MM3`` (the one lesion rule's components), the median of its core (the lesion eroded by one voxel, the
whole lesion when fewer than ``MIN_CORE_VOXELS`` remain) over the patient's normal-appearing WM median, per
modality. The voxel medians above pool every lesion voxel, so the large confluent lesions of patient19 dominate
them; these rows weigh every lesion alike.

    python benchmarks/calibrate_phantom.py [--data ../shared/data/open_ms_data] \
        [--lesions src/gdfree/phantom/real_lesion_contrasts.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from gdfree.arrays import label_components
from gdfree.io.adapters import discover_open_ms_data
from gdfree.io.bids import load_case
from gdfree.io.tables import write_json
from gdfree.types import Case, spacing_from_affine

MIN_LESION_MM3, MIN_CORE_VOXELS = 30.0, 8
LESION_ROLES = ("T1w", "T2w", "FLAIR")


def _kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 50) -> np.ndarray:
    """Class centres of a 1-D k-means (deterministic start at quantiles), sorted ascending."""
    centres = np.quantile(values, np.linspace(0.15, 0.85, k))
    for _ in range(iterations):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        centres = np.array([values[labels == j].mean() for j in range(k)])
    return np.sort(centres)


def lesion_rows(case: Case, lesion: np.ndarray, wm: np.ndarray, subject: str) -> list[dict[str, object]]:
    """One row per lesion of ``lesion`` of at least MIN_LESION_MM3: its core median / the WM median per role."""
    spacing = spacing_from_affine(case.images["FLAIR"].affine)
    labels, _ = label_components(lesion, spacing, min_volume_mm3=MIN_LESION_MM3)
    wm_level = {r: float(np.median(case.images[r].data[wm])) for r in LESION_ROLES}
    rows: list[dict[str, object]] = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        one = labels[box] == i
        core = ndimage.binary_erosion(one)
        core = core if core.sum() >= MIN_CORE_VOXELS else one
        row: dict[str, object] = {"subject": subject, "volume_mm3": round(float(one.sum() * np.prod(spacing)), 1)}
        for r in LESION_ROLES:
            values = np.asarray(case.images[r].data[box], np.float64)[core]
            row[r] = round(float(np.median(values)) / wm_level[r], 4)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[2] / "shared/data/open_ms_data"))
    parser.add_argument("--lesions", type=Path, help="write each lesion's contrast here (JSON)")
    args = parser.parse_args()
    rows: dict[str, dict[str, dict[str, float]]] = {}
    per_lesion: list[dict[str, object]] = []
    for files in discover_open_ms_data(Path(args.data) / "cross_sectional"):
        if len(files.images) < 4:
            continue
        case = load_case(files)
        t1 = case.images["T1w"].data.astype(np.float64)
        brain = ndimage.binary_erosion(case.images["FLAIR"].data > 1.0, iterations=2)
        lesion = case.masks["lesion"].data
        near_lesion = ndimage.binary_dilation(lesion, iterations=3)
        centres = _kmeans_1d(t1[brain & ~near_lesion])
        labels = np.argmin(np.abs(t1[..., None] - centres), axis=-1)
        cls = {
            name: ndimage.binary_erosion(brain & ~near_lesion & (labels == j))
            for j, name in enumerate(("CSF", "GM", "WM"))
        }
        regions = {
            "WM": cls["WM"],
            "GM": cls["GM"],
            "CSF": cls["CSF"],
            "lesion": ndimage.binary_erosion(lesion) if ndimage.binary_erosion(lesion).sum() > 50 else lesion,
        }
        out: dict[str, dict[str, float]] = {}
        for role, vol in case.images.items():
            img = vol.data.astype(np.float64)
            wm_med = float(np.median(img[regions["WM"]]))
            ratios = {k: round(float(np.median(img[m])) / wm_med, 3) for k, m in regions.items() if k != "WM"}
            diff = (img[1:] - img[:-1])[regions["WM"][1:] & regions["WM"][:-1]]
            mad = float(np.median(np.abs(diff - np.median(diff)))) * 1.4826 / np.sqrt(2)
            ratios["noise_sd"] = round(mad / wm_med, 4)
            ratios["n_lesion_voxels"] = int(regions["lesion"].sum())
            out[role] = ratios
        rows[files.subject] = out
        per_lesion += lesion_rows(case, np.asarray(lesion, bool), regions["WM"], files.subject)
    print(json.dumps(rows, indent=1))
    if args.lesions:
        write_json(args.lesions, {
            "source": "open_ms_data cross_sectional patient07 and patient19 (Lesjak et al. 2017, CC-BY 4.0): "
                      "consensus lesions, MNI space, 1 mm",
            "measured_by": "benchmarks/calibrate_phantom.py --lesions",
            "unit": "median of the lesion's core over the patient's normal-appearing white-matter median",
            "min_volume_mm3": MIN_LESION_MM3, "roles": list(LESION_ROLES), "lesions": per_lesion,
        })  # fmt: skip
        print(f"{len(per_lesion)} lesions -> {args.lesions}")


if __name__ == "__main__":
    main()
