"""Measure tissue and lesion contrasts of the shared real cases, to calibrate the phantom's defaults.

Uses open_ms_data patient07 and patient19 (MNI space, skull-stripped, N4-corrected; Lesjak et al. 2017,
CC-BY). Tissue classes come from a 3-class k-means of each patient's own T1w inside the brain (lesions
excluded), eroded by one voxel; the template's maps fit these patients' anatomy too loosely (patient19 is
atrophic) to measure contrasts from them. Prints, per modality,
the median intensity of GM, CSF and consensus lesions relative to normal-appearing WM, and a noise
estimate (robust std of the difference of neighbouring voxels in WM / sqrt(2), relative to WM).

    python benchmarks/calibrate_phantom.py [--data ../shared/data/open_ms_data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from gdfree.io.adapters import discover_open_ms_data
from gdfree.io.bids import load_case


def _kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 50) -> np.ndarray:
    """Class centres of a 1-D k-means (deterministic start at quantiles), sorted ascending."""
    centres = np.quantile(values, np.linspace(0.15, 0.85, k))
    for _ in range(iterations):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        centres = np.array([values[labels == j].mean() for j in range(k)])
    return np.sort(centres)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[2] / "shared/data/open_ms_data"))
    args = parser.parse_args()
    rows: dict[str, dict[str, dict[str, float]]] = {}
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
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
