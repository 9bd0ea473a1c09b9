"""Does a voxel's prediction depend on the field of view, and which inference path agrees with the reference?

The networks are trained on 48^3 patches. With instance norm every layer normalises by the statistics of
whatever it is given, so the whole exam, its brain box and tiles of various sizes give different predictions;
with batch norm (running statistics from training) they should not. This benchmark trains the demo's
segmentation recipe with ``norm: batch`` (same phantom cohort, split, steps and seed as the shipped network,
``benchmarks/framings.py --only segmentation-1``) and scores both networks on the same 120 phantom test
patients (20 test + 100 held-out) through four paths: the whole padded volume, the brain's bounding box, and
MONAI sliding windows of 48^3 (overlap 0.5, the training patch) and 96^3 (overlap 0.25). Per path: pooled
enhancing-lesion F1 (msseg rule, patient-bootstrap 95% CI), enhancing and lesion voxel Dice against the
reference, and the mask Dice of each path against the whole-volume path.

    python benchmarks/fov.py --framings /tmp/fr --out /tmp/fov --train      # ~35 min on 2 cores
    python benchmarks/fov.py --framings /tmp/fr --out /tmp/fov              # score; docs/inference_fov.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

PATHS = ("whole", "brain_box", "window48", "window96")


def _train(args: argparse.Namespace) -> Path:
    from gdfree.demo import demo_config
    from gdfree.train import train

    run = args.out / "segmentation-batchnorm" / "run"
    if (run / "model.json").is_file():
        return run
    cfg = demo_config(args.framings / "cohort-1", args.steps, args.seed)
    cfg = dataclasses.replace(cfg, heads=("enhancing", "lesion"), head_weights=(1.0, 0.3), norm="batch",
                              split=dataclasses.replace(cfg.split, test_fraction=0.2))  # fmt: skip
    t0 = time.perf_counter()
    train(cfg, run)
    (run.parent / "train_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return run


def _logits(net: Any, image: np.ndarray, brain: np.ndarray, path: str) -> np.ndarray:
    import torch

    from gdfree.arrays import bounding_box
    from gdfree.models.forward import predict_volume

    if path == "whole":
        return predict_volume(net, image, logits_only=True, crop=None)
    if path == "brain_box":
        return predict_volume(net, image, logits_only=True, crop=bounding_box(brain, 4))
    from monai.inferers import sliding_window_inference

    roi, overlap = (48, 0.5) if path == "window48" else (96, 0.25)
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(image[None]), (roi,) * 3, 4, net, overlap=overlap,
                                       mode="gaussian")  # fmt: skip
    return out[0].numpy()


def _score(args: argparse.Namespace, name: str, run: Path) -> dict[str, Any]:
    from scipy.special import expit

    from gdfree.data.cases import load_array_case
    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.cohort import evaluate_case, summarize
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover

    model = TrainedModel.load(run)
    net = model.network.eval()
    split = json.loads((run / "split.json").read_text())
    test = {c.split(":")[-1] for c in split["test_cases"]}
    cases = [c for c in discover(args.framings / "cohort-1") if c.case_id in test]
    cases += list(discover(args.framings / "cohort-1-heldout"))[: args.heldout]
    cfg = EvaluationConfig(n_boot=args.n_boot)
    results: dict[str, list[Any]] = {p: [] for p in PATHS}
    dice: dict[str, list[float]] = {f"{p}_{h}": [] for p in PATHS for h in ("enhancing", "lesion")}
    agree: dict[str, list[float]] = {f"{p}_{h}": [] for p in PATHS[1:] for h in ("enhancing", "lesion")}
    seconds = dict.fromkeys(PATHS, 0.0)
    for files in cases:
        case = load_array_case(files, model.modalities, ("enhancing", "lesion"))
        masks = {}
        for path in PATHS:
            t0 = time.perf_counter()
            z = _logits(net, case.image, case.brain, path)
            seconds[path] += time.perf_counter() - t0
            probs = {h: np.where(case.brain, expit(z[i] / model.temperature[h]), 0.0).astype(np.float32)
                     for i, h in enumerate(model.heads)}  # fmt: skip
            masks[path] = model.masks(probs, case.spacing_mm)
            results[path].append(evaluate_case(case.labels["enhancing"], case.spacing_mm, case_id=case.case_id,
                                               pred=masks[path]["enhancing"], prob=probs["enhancing"],
                                               brain=case.brain, config=cfg))  # fmt: skip
            for h in ("enhancing", "lesion"):
                dice[f"{path}_{h}"].append(_dice(masks[path][h], case.labels[h]))
                if path != "whole":
                    agree[f"{path}_{h}"].append(_dice(masks[path][h], masks["whole"][h]))
    rows = {}
    for path in PATHS:
        pooled = summarize(results[path], cfg)["pooled_lesions"]
        rows[path] = {
            "enhancing_lesion_f1": pooled["lesion_f1"],
            "enhancing_lesion_f1_ci": pooled["lesion_f1_ci"],
            "enhancing_dice": _mean(dice[f"{path}_enhancing"]),
            "lesion_dice": _mean(dice[f"{path}_lesion"]),
            "seconds_per_exam": seconds[path] / len(cases),
            **(
                {
                    "mask_dice_vs_whole_enhancing": _mean(agree[f"{path}_enhancing"]),
                    "mask_dice_vs_whole_lesion": _mean(agree[f"{path}_lesion"]),
                }
                if path != "whole"
                else {}
            ),
        }
    return {"model": name, "run": str(run), "patients": len(cases), "paths": rows}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks, NaN when both are empty (left out of the means)."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else float("nan")


def _mean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return float(np.mean(kept)) if kept else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framings", type=Path, required=True, help="benchmarks/framings.py output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", action="store_true", help="train the batch-norm network only")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=Path("docs/inference_fov.json"))
    args = parser.parse_args()
    if args.train:
        _train(args)
        return
    rows = [_score(args, "instance norm (shipped recipe)", args.framings / "segmentation-1" / "run"),
            _score(args, "batch norm (same recipe)", _train(args))]  # fmt: skip
    from gdfree.io.tables import write_json

    write_json(args.json, {"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}})
    for row in rows:
        print(row["model"])
        for path, r in row["paths"].items():
            print(
                f"  {path:10s} F1 {r['enhancing_lesion_f1']:.3f} {r['enhancing_lesion_f1_ci']} enh Dice "
                f"{r['enhancing_dice']:.3f} lesion Dice {r['lesion_dice']:.3f} "
                f"agree {r.get('mask_dice_vs_whole_enhancing', 1):.3f}/{r.get('mask_dice_vs_whole_lesion', 1):.3f} "
                f"{r['seconds_per_exam']:.2f} s"
            )


if __name__ == "__main__":
    main()
