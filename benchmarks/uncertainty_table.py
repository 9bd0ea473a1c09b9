"""How good is the uncertainty? MC dropout vs test-time flips vs an ensemble, on a run's held-out patients.

For a training run (its ``split.json`` names the test and validation patients) and each sampling method:
- lesion level: predicted enhancing lesions (mean of the samples >= the calibrated threshold, components above
  the model's minimum lesion volume, as ``predict`` reports them) are TP or FP
  by the msseg rule; the AUROC of each lesion measure for telling FP (positive) from TP, beside the two
  baselines that need no sampling (1 - the lesion's mean probability, and its smallness: minus its volume),
  and each measure's paired difference from the probability baseline, all with 95% CIs from resampling
  patients (a patient's lesions stay together); and the probability combined with each of a few measures
  (logistic regression, out-of-fold by patient: what the measure adds);
- voxel level: the retention curve (nDSC, Shifts 2022) of the mutual information and of the predictive
  entropy over the brain voxels, its area R-AUC (lower is better) against random retention (seeded);
- calibration: ECE of the mean probability with temperature 1 and with the temperature fitted on the
  validation patients, over all brain voxels and over the voxels within 2 voxels of a lesion (where
  activity is decided; the brain-wide ECE is dominated by background near 0);
- seconds per exam.

    python benchmarks/uncertainty_table.py --run RUN [--ensemble RUN2 ...] [--mc 10] [--out DIR]
        [--methods mc,mc-last,flips] [--cohort DATASET]

``--cohort``: score every case of DATASET (fresh patients, e.g. for a shipped model without its training
folders) instead of the run's test patients, with the temperature ``model.json`` records.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np


def _cases(split: dict, part: str, meta: dict, cohort: Path | None = None) -> list:
    from gdfree.data.cases import NORMALISATION, load_array_case
    from gdfree.io.adapters import discover

    by_root: dict[str, set[str] | None] = {str(cohort): None} if cohort else {}
    for key in [] if cohort else split[f"{part}_patients"]:
        root, subject = key.rsplit(":", 1)
        by_root.setdefault(root, set()).add(subject)  # type: ignore[union-attr]
    return [load_array_case(c, meta["modalities"], tuple(meta["heads"]), oracle=bool(meta.get("oracle")),
                            normalisation=meta.get("normalisation", NORMALISATION))
            for root, subjects in by_root.items() for c in discover(root)
            if subjects is None or c.subject in subjects]  # fmt: skip


def patient_bootstrap(y: np.ndarray, scores: dict[str, np.ndarray], patients: list[str], seed: int,
                      n_boot: int = 2000) -> dict[str, list[float]]:  # fmt: skip
    """Per lesion measure: [AUROC for FP (y = 1) vs TP, CI low, CI high, paired difference from the
    ``probability`` baseline, its CI low, high]; CIs are percentiles over ``n_boot`` resamples of patients
    (each resample takes whole patients with replacement; resamples with one class only are dropped)."""
    from gdfree.metrics.patient import percentile_ci, roc_auc

    ids = sorted(set(patients))
    rows_of = {p: np.flatnonzero(np.asarray(patients) == p) for p in ids}
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {k: [] for k in scores}
    for _ in range(n_boot):
        idx = np.concatenate([rows_of[ids[i]] for i in rng.integers(0, len(ids), len(ids))])
        if not 0 < y[idx].sum() < idx.size:
            continue
        for key, values in scores.items():
            boot[key].append(roc_auc(y[idx], values[idx]))
    out = {}
    base = np.asarray(boot["probability"])
    for key, values in scores.items():
        auc = roc_auc(y, values) if 0 < y.sum() < y.size else math.nan
        lo, hi, _ = percentile_ci(boot[key])
        d_lo, d_hi, _ = percentile_ci(np.asarray(boot[key]) - base)
        diff = auc - roc_auc(y, scores["probability"]) if not math.isnan(auc) else math.nan
        out[key] = [round(v, 3) for v in (auc, lo, hi, diff, d_lo, d_hi)]
    return out


COMBINED = ("smallness", "lsu", "predictive_entropy_mean", "mutual_information_mean")
"""Measures each combined with the probability (``probability+<measure>``) to see what they add to it."""


def combined_scores(
    y: np.ndarray, scores: dict[str, np.ndarray], patients: list[str], seed: int
) -> dict[str, np.ndarray]:  # fmt: skip
    """Out-of-fold FP probabilities of a logistic regression (scikit-learn, standardised inputs) on the
    probability and one measure of :data:`COMBINED`, folds by patient (5, GroupKFold): whether the measure adds
    to the probability, judged on lesions of patients the combination was not fitted on."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    groups = np.asarray(patients)
    folds = list(GroupKFold(n_splits=min(5, len(set(patients)))).split(y, y, groups))
    for name in COMBINED:
        if name not in scores:
            continue
        x = np.stack([scores["probability"], scores[name]], axis=1)
        oof = np.full(y.size, np.nan)
        for train, test in folds:
            if 0 < y[train].sum() < train.size:
                fit = make_pipeline(StandardScaler(), LogisticRegression(random_state=seed)).fit(x[train], y[train])
                oof[test] = fit.predict_proba(x[test])[:, 1]
        if np.isfinite(oof).all():
            out[f"probability+{name}"] = oof
    return out


def main() -> None:
    from scipy import ndimage

    from gdfree.infer.sampling import sample_predictions
    from gdfree.metrics.calibration import expected_calibration_error, retention_auc, retention_curve
    from gdfree.metrics.lesions import DetectionRule, label_lesions, match_lesions
    from gdfree.models.checkpoint import load_model
    from gdfree.train.validation import fit_temperatures
    from gdfree.uncertainty import VOXEL_MEASURES, lesion_uncertainty, voxel_uncertainty

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--stem", default="model", help="checkpoint of the run: model, best or last")
    parser.add_argument("--ensemble", type=Path, nargs="*", default=[])
    parser.add_argument("--mc", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--cohort", type=Path, default=None, help="score every case of this dataset instead")
    parser.add_argument(
        "--methods",
        default="mc,flips,ensemble",
        help="which of mc, mc-last (only the last dropout layer samples), flips, ensemble to run",
    )
    args = parser.parse_args()

    model, meta = load_model(args.run, stem=args.stem)
    members = [load_model(r, stem=args.stem)[0] for r in args.ensemble]
    heads = list(meta["heads"])
    e = heads.index("enhancing")
    if args.cohort:
        test = _cases({}, "test", meta, args.cohort)
        temps, notes = meta.get("temperature") or {}, meta.get("temperature_notes") or {}
    else:
        split = json.loads((args.run / "split.json").read_text())
        test, val = _cases(split, "test", meta), _cases(split, "val", meta)
        temps, notes = fit_temperatures(model, val, heads, "cpu", args.seed)
    t_enh = temps.get("enhancing", 1.0)
    logit_t = math.log(meta["threshold"] / (1 - meta["threshold"]))
    rule = DetectionRule.preset("msseg")
    min_mm3 = max(rule.min_volume_mm3, float(meta.get("min_lesion_mm3", 0.0)))
    wanted = {m.strip() for m in args.methods.split(",")}
    methods = {}
    if "mc" in wanted:
        methods[f"MC dropout x{args.mc}"] = ([model], args.mc, False, "all")
    if "mc-last" in wanted:
        methods[f"MC dropout, last layer x{args.mc}"] = ([model], args.mc, False, "last")
    if "flips" in wanted:
        methods["flips x8"] = ([model], 0, True, "all")
    if members and "ensemble" in wanted:
        methods[f"ensemble x{1 + len(members)}"] = ([model, *members], 0, False, "all")
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, (models, mc, flips, mc_layers) in methods.items():
        lesion_labels: list[int] = []
        lesion_scores: dict[str, list[float]] = {}
        lesion_case: list[str] = []
        curves: dict[str, list[float]] = {"mutual_information": [], "predictive_entropy": [], "random": []}
        probs_raw, probs_cal, refs, near_lesion = [], [], [], []
        seconds = 0.0
        for c in test:
            start = time.perf_counter()
            stack = sample_predictions(models, c.image, mc=mc, flips=flips, seed=args.seed, mc_layers=mc_layers,
                                       expectation=True)[:, e]  # fmt: skip
            seconds += time.perf_counter() - start
            logits = np.log(np.clip(stack, 1e-7, 1 - 1e-7) / np.clip(1 - stack, 1e-7, 1))
            calibrated = 1 / (1 + np.exp(-logits / t_enh))
            # what predict thresholds: for head dropout the deterministic pass (last row), else the samples' mean
            head_site = all(getattr(m, "head_dropout", None) is not None for m in models) and mc > 0
            stack, calibrated, expected = stack[:-1], calibrated[:-1], calibrated[-1]
            mean_cal = np.where(c.brain, expected if head_site else calibrated.mean(axis=0), 0.0)
            ref = c.labels["enhancing"]
            threshold = 1 / (1 + math.exp(-logit_t / t_enh))
            voxel = voxel_uncertainty(np.where(c.brain, calibrated, 0.0))
            # the lesions predict reports: components above the model's minimum lesion volume
            labels, n = label_lesions(mean_cal >= threshold, c.spacing_mm, rule.connectivity, min_mm3)
            mask = labels > 0
            if n:
                match = match_lesions(mask, ref, c.spacing_mm, rule)
                lesion_labels += [int(not t) for t in match.pred_true]  # FP = positive
                lesion_case += [c.case_id] * n
                ids = np.arange(1, n + 1)
                lesion_scores.setdefault("probability", []).extend(1 - ndimage.mean(mean_cal, labels, ids))
                lesion_scores.setdefault("smallness", []).extend(-ndimage.sum(np.ones_like(mean_cal), labels, ids))
                for row in lesion_uncertainty(np.where(c.brain, calibrated, 0.0), labels, threshold, voxel=voxel,
                                              connectivity=rule.connectivity):  # fmt: skip
                    for key, value in row.items():
                        if key != "lesion_id":
                            lesion_scores.setdefault(key, []).append(value)
            b = c.brain
            for key in ("mutual_information", "predictive_entropy"):
                curves[key].append(retention_auc(retention_curve(mask[b], ref[b], voxel[key][b])))
            curves["random"].append(retention_auc(retention_curve(mask[b], ref[b], rng.random(int(b.sum())))))
            probs_raw.append(np.where(b, stack.mean(axis=0), 0.0)[b])
            probs_cal.append(mean_cal[b])
            refs.append(ref[b])
            near = ndimage.binary_dilation(c.labels["lesion"], iterations=2)[b]  # where activity is decided
            near_lesion.append(near)
        y = np.asarray(lesion_labels)
        measures = {k: np.asarray(v, float) for k, v in lesion_scores.items()
                    if not (k.endswith("_max") and k.startswith(("expected", "variance")))}  # fmt: skip
        if 0 < y.sum() < y.size:
            measures.update(combined_scores(y, measures, lesion_case, args.seed))
        lesion_auc = patient_bootstrap(y, measures, lesion_case, args.seed) if y.size else {}
        ref_all, raw_all, cal_all = np.concatenate(refs), np.concatenate(probs_raw), np.concatenate(probs_cal)
        near_all = np.concatenate(near_lesion)
        rows.append({
            "method": name, "test_patients": len(test), "lesions": int(y.size), "false_positive_lesions": int(y.sum()),
            "lesion_auroc_fp_vs_tp": lesion_auc,  # [AUROC, CI, minus the probability's AUROC, CI]
            "retention_auc": {k: round(float(np.mean(v)), 4) for k, v in curves.items()},
            "ece_t1": round(expected_calibration_error(raw_all, ref_all), 5),
            "ece_calibrated": round(expected_calibration_error(cal_all, ref_all), 5),
            "ece_lesions_t1": round(expected_calibration_error(raw_all[near_all], ref_all[near_all]), 5),
            "ece_lesions_calibrated": round(expected_calibration_error(cal_all[near_all], ref_all[near_all]), 5),
            "temperature": round(t_enh, 4), "seconds_per_exam": round(seconds / len(test), 2),
            "lesion_rows": [{"patient": p, "false_positive": int(f), **{k: float(v[i]) for k, v in measures.items()}}
                            for i, (p, f) in enumerate(zip(lesion_case, y, strict=True))],
        })  # fmt: skip
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "lesion_rows"}), flush=True)
    summary = {"run": str(args.run), "stem": args.stem, "ensemble": [str(r) for r in args.ensemble],
               "temperature_notes": notes, "voxel_measures": VOXEL_MEASURES, "rows": rows}  # fmt: skip
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "uncertainty_table.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
