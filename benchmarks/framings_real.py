"""The phantom-trained framings on the real shared cases: what they write, how close, and a picture.

Runs ``gdfree predict`` with the translation model (writes the synthetic post-Gd T1w) and with the
segmentation model plus the lesion-level classifier (``--activity``) on a prepared real dataset (e.g. the
open_ms_data cases prepared at 2 mm), scores them with ``gdfree evaluate`` (PSNR/SSIM/MAE of the synthetic
post-Gd T1w against the acquired one in the T1w's normalised units; lesion-level activity on the consensus
lesions against the enhancing labels ``prepare`` derived), prints one row per case and draws, per case, the
slice with the most enhancing voxels: FLAIR with the consensus lesions (green) and the lesions called active
(red, p_active >= the classifier's threshold); real post-minus-pre T1w with the derived enhancing label; the
synthetic post-Gd T1w; synthetic minus pre; the segmentation model's enhancing probability.

    python benchmarks/framings_real.py --data /tmp/s2r/real2mm --translation RUN_T --segmentation RUN_S \\
        --activity CLF --out /tmp/framings-real [--figure docs/img/framings_real.png]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

import numpy as np


def _read(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.load(path).dataobj).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--translation", type=Path, required=True)
    parser.add_argument("--segmentation", type=Path, required=True)
    parser.add_argument("--activity", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    from gdfree.evaluate.files import evaluate_dataset
    from gdfree.io.adapters import discover
    from gdfree.predict import predict_dataset

    for name in ("synth", "seg", "eval-synth", "eval-seg"):
        shutil.rmtree(args.out / name, ignore_errors=True)
    predict_dataset(args.translation, args.data, args.out / "synth")
    predict_dataset(args.segmentation, args.data, args.out / "seg", activity=args.activity)
    _, synth_eval, _ = evaluate_dataset(args.out / "synth", args.data)
    _, seg_eval, _ = evaluate_dataset(args.out / "seg", args.data)
    print(json.dumps({"synth_per_case": synth_eval["per_case"], "lesion_activity": seg_eval.get("lesion_activity"),
                      "segmentation_pooled": seg_eval["pooled_lesions"]}, indent=1, default=str))  # fmt: skip
    if args.figure is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = discover(args.data)
    fig, axes = plt.subplots(len(refs), 5, figsize=(15, 3.2 * len(refs)), squeeze=False)
    for row, ref in zip(axes, refs, strict=True):
        cid = ref.case_id

        def anat(folder: str, tail: str, cid: str = cid, subject: str = ref.subject) -> Path:
            return args.out / folder / f"sub-{subject}" / "anat" / f"{cid}_{tail}"

        flair, pre, post = (_read(ref.images[m]) for m in ("FLAIR", "T1w", "T1gd"))
        brain = _read(ref.masks["brain"]) > 0
        lesion, enh = _read(ref.masks["lesion"]) > 0, _read(ref.masks["enhancing"]) > 0
        synth = _read(anat("synth", "desc-synthT1gd_T1w.nii.gz"))
        prob = _read(anat("seg", "desc-enhancing_probseg.nii.gz"))
        ids = _read(anat("seg", "desc-all_dseg.nii.gz")).astype(int)
        with open(anat("seg", "desc-all_lesions.tsv")) as fh:
            table = list(csv.DictReader(fh, delimiter="\t"))
        called = {int(r["lesion_id"]) for r in table if r["predicted_active"] == "true"}
        active = np.isin(ids, sorted(called)) if called else np.zeros_like(lesion)
        z = int(np.argmax(enh.sum(axis=(0, 1)))) if enh.any() else int(np.argmax(lesion.sum(axis=(0, 1))))
        scale = pre[brain].std()
        real_diff = np.where(brain, post / np.median(post[brain]) * np.median(pre[brain]) - pre, 0) / scale
        synth_diff = np.where(brain, synth - pre, 0) / scale
        panels = [(flair, f"{cid} z={z}\nFLAIR, lesions (green), called active (red)", "gray", None),
                  (real_diff, "real post - pre T1w (SDs),\nderived enhancing (black)", "RdBu_r", (-3, 3)),
                  (synth, "synthetic post-Gd T1w", "gray", None),
                  (synth_diff, "synthetic - pre T1w (SDs)", "RdBu_r", (-3, 3)),
                  (prob, "enhancing probability,\nderived enhancing (cyan)", "magma", (0, 1))]  # fmt: skip
        for ax, (img, title, cmap, lim) in zip(row, panels, strict=True):
            vmin, vmax = lim if lim else np.percentile(img[brain], [1, 99.5])
            ax.imshow(img[:, :, z].T, cmap=cmap, origin="lower", vmin=vmin, vmax=vmax)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        row[0].contour(lesion[:, :, z].T, levels=[0.5], colors="lime", linewidths=0.6)
        if active[:, :, z].any():
            row[0].contour(active[:, :, z].T, levels=[0.5], colors="red", linewidths=0.9)
        for ax in row[1:2]:
            ax.contour(enh[:, :, z].T, levels=[0.5], colors="black", linewidths=0.6)
        row[4].contour(enh[:, :, z].T, levels=[0.5], colors="cyan", linewidths=0.6)
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=80)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
