"""Time every per-case evaluation metric on a full 1 mm MNI pair (182 x 218 x 182), as a ratio to a baseline.

The pair is real: open_ms_data patient07's consensus lesion mask (Lesjak et al. 2017, CC-BY) as the
reference, and a degraded copy as the prediction (eroded, shifted 1 mm, plus noisy probabilities from a
logistic model, seed 0), with its skull-stripped FLAIR as the brain mask. The target of issue 3 is "all
metrics for a 182x218x182 pair under 2 s on this machine".

Timed (median of ``--repeats`` runs):
    segmentation: :func:`gdfree.evaluate.evaluate_case` with a mask, a probability map, the brain mask and an
        uncertainty map: voxel + surface metrics, lesion matching, FROC at 23 thresholds, calibration,
        retention curve;
    translation: MAE/PSNR/SSIM of a synthetic T1gd (the T1POST plus noise) in the brain mask;
    baseline: ``scipy.ndimage.label`` of the reference mask (6-connectivity), a fixed reference workload,
        so that the ratios compare across runs on a shared machine.

    python benchmarks/bench_evaluate.py [--data ../shared/data/open_ms_data] [--rule msseg] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from gdfree.evaluate import EvaluationConfig, evaluate_case
from gdfree.io.images import read_volume
from gdfree.metrics import DetectionRule, translation_metrics

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms_data"


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rule", default="msseg", choices=("msseg", "iou", "any"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    patient = args.data / "cross_sectional" / "MNI" / "patient07"
    ref_vol = read_volume(patient / "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz")
    flair = read_volume(patient / "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz")
    post = np.asarray(read_volume(patient / "T1POST_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz").data)
    ref = np.asarray(ref_vol.data) > 0.5
    brain = np.asarray(flair.data) > 0
    rng = np.random.default_rng(0)
    pred = np.roll(ndimage.binary_erosion(ref), 1, axis=0)
    smooth = ndimage.gaussian_filter(np.roll(ref, 1, axis=0).astype(np.float32), 1.0)
    logit = -8 + 12 * smooth + rng.normal(0, 1.5, ref.shape).astype(np.float32)
    prob = (1 / (1 + np.exp(-logit))).astype(np.float32) * brain
    uncertainty = (prob * (1 - prob)).astype(np.float32)
    synth = (post + rng.normal(0, 0.05 * post[brain].std(), post.shape)).astype(np.float32)
    cfg = EvaluationConfig(rule=DetectionRule.preset(args.rule))

    def segmentation() -> object:
        return evaluate_case(ref, ref_vol.spacing_mm, pred=pred, prob=prob, brain=brain, uncertainty=uncertainty,
                             config=cfg)  # fmt: skip

    def translation() -> object:
        return translation_metrics(synth, post, brain)

    def baseline() -> object:
        return ndimage.label(ref)

    segmentation()  # warm caches and imports
    translation()
    t_base = _median_time(baseline, args.repeats)
    t_seg = _median_time(segmentation, args.repeats)
    t_trans = _median_time(translation, args.repeats)
    result = segmentation().row  # type: ignore[attr-defined]
    report = {
        "shape": list(ref.shape),
        "rule": args.rule,
        "repeats": args.repeats,
        "baseline_label_s": round(t_base, 4),
        "segmentation_s": round(t_seg, 3),
        "translation_s": round(t_trans, 3),
        "all_s": round(t_seg + t_trans, 3),
        "segmentation_over_baseline": round(t_seg / t_base, 1),
        "all_over_baseline": round((t_seg + t_trans) / t_base, 1),
        "target_all_s": 2.0,
        "n_ref_lesions": result["n_ref_lesions"],
        "n_pred_lesions": result["n_pred_lesions"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
