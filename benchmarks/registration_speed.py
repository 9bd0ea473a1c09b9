"""Faster registration for cohorts: which SimpleITK settings keep the accuracy and save the time?

For each candidate :class:`gdfree.preprocess.registration.RegistrationConfig`, measured in one run, one after
another: the longitudinal test (open_ms_data longitudinal patient01, T1W moved by (12, -8, 10) degrees and
(12, -10, 8) mm, registered onto FLAIR, the move undone; mean displacement over the head against the upstream
T1W->FLAIR transform; studies 1 and 2), and a 1 mm isotropic cross-sectional exam (patient07, MNI space,
182x218x182, already aligned upstream: T1W onto FLAIR, mean displacement of the found transform from the
identity over the brain). Seconds per registration with SimpleITK's default threads.

    python benchmarks/registration_speed.py --json docs/registration_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "open_ms_data"
CANDIDATES = {
    "default (shrink 4/2/1, 10% samples)": {},
    "shrink 4/2 (no full-resolution level)": {"shrink": (4, 2), "smooth_mm": (2.0, 1.0)},
    "5% samples": {"sampling": 0.05},
    "shrink 8/4/2": {"shrink": (8, 4, 2), "smooth_mm": (4.0, 2.0, 1.0)},
    "shrink 4/2, 5% samples": {"shrink": (4, 2), "smooth_mm": (2.0, 1.0), "sampling": 0.05},
    "samples 10/10/2% per level": {"sampling": (0.1, 0.1, 0.02)},
    "samples 20/10/3% per level": {"sampling": (0.2, 0.1, 0.03)},
    "rigid only, samples 20/10/3% per level": {"sampling": (0.2, 0.1, 0.03), "stages": ("rigid",)},
}


def main() -> None:
    import SimpleITK as sitk

    from gdfree.io.images import from_sitk
    from gdfree.preprocess.itk import transform_matrix
    from gdfree.preprocess.registration import (
        RegistrationConfig,
        _centre,
        mean_displacement,
        move_image,
        read_transform,
        register,
        rigid_matrix,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("docs/registration_speed.json"))
    parser.add_argument("--only", default=None, help="one candidate name")
    args = parser.parse_args()
    rows = []
    cross = SHARED / "cross_sectional" / "MNI" / "patient07"
    c_flair = sitk.ReadImage(str(cross / "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"))
    c_t1 = sitk.ReadImage(str(cross / "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"))
    c_brain = from_sitk(c_flair).data > 0
    for name, knobs in CANDIDATES.items():
        if args.only and name != args.only:
            continue
        cfg = dataclasses.replace(RegistrationConfig(), **knobs)
        row = {"candidate": name, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()}}
        for study in ("study1", "study2"):
            folder = SHARED / "longitudinal" / "raw" / "patient01"
            flair = sitk.ReadImage(str(folder / f"{study}_FLAIR.nii.gz"))
            t1 = sitk.ReadImage(str(folder / f"{study}_T1W.nii.gz"))
            upstream = read_transform(folder / f"{study}_T1W_intrastudy_to_FLAIR.txt")
            head = from_sitk(sitk.OtsuThreshold(flair, 0, 1)).data > 0
            move = rigid_matrix((12, -8, 10), (12, -10, 8), _centre(t1))
            t0 = time.perf_counter()
            found = register(flair, move_image(t1, move), cfg)
            row[f"{study}_s"] = time.perf_counter() - t0
            row[f"{study}_mm"] = mean_displacement(np.linalg.inv(move) @ transform_matrix(found), upstream, flair, head)
        t0 = time.perf_counter()
        found = register(c_flair, c_t1, cfg)
        row["cross_1mm_s"] = time.perf_counter() - t0
        row["cross_1mm_mm_from_identity"] = mean_displacement(transform_matrix(found), np.eye(4), c_flair, c_brain)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if not args.only:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    elif args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
