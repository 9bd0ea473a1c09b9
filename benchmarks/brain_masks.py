"""Brain masks on the shared real scans: deepbet (learned) against the atlas registration.

- ``longitudinal/raw/patient01`` study1/study2 T1w: native scanner space, skull and neck on, 0.72x0.72x3 mm.
  The shared subset holds no brain mask for them, so the two methods are compared with each other (Dice,
  volumes) and drawn (``--figure``: T1w slices, learned in green, atlas in red) for a look.
- ``cross_sectional/MNI`` patient07/19 T1w: skull-stripped upstream; the upstream brain is the image's support
  (voxels > 0, holes filled), the reference both methods are scored against (Dice).

    python benchmarks/brain_masks.py --shared ../shared/data/open_ms_data --out docs/brain_masks.json \\
        --figure docs/img/brain_masks.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from scipy import ndimage

    from gdfree.io.images import from_sitk, read_volume, save_figure, to_sitk
    from gdfree.metrics.voxel import dice
    from gdfree.preprocess.brain import atlas_brain_mask, learned_brain_mask

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data/open_ms_data"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()

    def both(path: Path) -> tuple:
        image = read_volume(path)
        t = time.perf_counter()
        learned = learned_brain_mask(image)
        t_learned = time.perf_counter() - t
        t = time.perf_counter()
        atlas = from_sitk(atlas_brain_mask(to_sitk(image, np.float32))[0]).data > 0
        return image, learned, atlas, round(t_learned, 1), round(time.perf_counter() - t, 1)

    rows, drawn = [], []
    for study in ("study1", "study2"):
        path = args.shared / "longitudinal" / "raw" / "patient01" / f"{study}_T1W.nii.gz"
        image, learned, atlas, s_l, s_a = both(path)
        ml = float(np.prod(image.spacing_mm)) / 1000
        rows.append({"scan": f"longitudinal patient01 {study} T1w (skull on)", "reference": "none shared",
                     "dice_learned_vs_atlas": round(dice(learned, atlas), 4),
                     "volume_learned_ml": round(learned.sum() * ml, 1), "volume_atlas_ml": round(atlas.sum() * ml, 1),
                     "seconds_learned": s_l, "seconds_atlas": s_a})  # fmt: skip
        drawn.append((f"{study} T1w", image.data, learned, atlas))
        print(rows[-1], flush=True)
    for patient in ("patient07", "patient19"):
        path = next((args.shared / "cross_sectional" / "MNI" / patient).glob("T1_*.nii.gz"))
        image, learned, atlas, s_l, s_a = both(path)
        reference = ndimage.binary_fill_holes(image.data > 1e-3)
        rows.append({"scan": f"cross_sectional {patient} T1w (skull-stripped upstream)",
                     "reference": "upstream skull stripping (support)",
                     "dice_learned_vs_reference": round(dice(learned, reference), 4),
                     "dice_atlas_vs_reference": round(dice(atlas, reference), 4),
                     "dice_learned_vs_atlas": round(dice(learned, atlas), 4),
                     "seconds_learned": s_l, "seconds_atlas": s_a})  # fmt: skip
        print(rows[-1], flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(drawn), 4, figsize=(12, 3.3 * len(drawn)), squeeze=False)
        for row, (name, data, learned, atlas) in zip(axes, drawn, strict=True):
            filled = np.flatnonzero(learned.any(axis=(0, 1)))
            slices = np.linspace(filled[0], filled[-1], 6)[1:-1].astype(int) if filled.size else [data.shape[2] // 2]
            hi = float(np.percentile(data, 99.5))
            for ax, z in zip(row, slices, strict=False):
                ax.imshow(np.rot90(data[:, :, z]), cmap="gray", vmin=0, vmax=hi)
                for mask, colour in ((learned, "lime"), (atlas, "red")):
                    if mask[:, :, z].any():
                        ax.contour(np.rot90(mask[:, :, z].astype(float)), levels=[0.5], colors=colour, linewidths=0.8)
                ax.set_title(f"{name}, slice {z}: learned green, atlas red", fontsize=8)
                ax.axis("off")
        fig.tight_layout()
        save_figure(fig, args.figure, dpi=80)


if __name__ == "__main__":
    main()
