"""Activity from a prior exam (issue 32): new lesions by the registered FLAIR subtraction, beside the single-exam
prediction, on phantom pairs and on open_ms_data's longitudinal patients.

    gdfree synth --out /tmp/long/phantom --subjects 90 --first 2000 --seed 0 --timepoints 2 --jobs 2
    python benchmarks/longitudinal.py --phantom /tmp/long/phantom --work /tmp/long --train 30
    python benchmarks/longitudinal.py --real ../shared/data/open_ms_data/longitudinal/raw --work /tmp/long

Phantom (sub-2001.. of seed 0: neither the shipped network nor its activity classifier saw them): the first
``--train`` subjects fit the subtraction's ``k`` and the combination; the rest are the test patients. Arms, on
the reference (truth) lesions of each test follow-up, lesion-level activity (metrics.activity, 2000 patient
resamples): ``single`` = the shipped network's highest enhancing probability in the lesion (its own threshold);
``pair`` = the highest FLAIR subtraction (noise units) in it, called at ``k``; ``both`` = a logistic regression
of the two fitted on the training patients (threshold of the best training F1); baselines ``every lesion
active`` and ``truly new`` (the pair's ceiling: every new lesion called active). New-lesion detection: the
subtraction's components against the new lesions (msseg rule), pooled F1 with a patient-bootstrap CI.

Real: each patient's study 1 FLAIR registered onto study 2's; the lesion-change mask ``gt.nii.gz`` brought from
the common space onto study 2's FLAIR through the upstream transform; the brain mask deepbet's on study 2's FLAIR;
the subtraction at the phantom's ``k`` and at the ``k`` fitted on the other real patients; overlays in WORK/fig.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.activity.change import fit_subtraction_k, hyperintense_region, subtraction_lesions
from gdfree.io.images import from_sitk, read_mask, read_volume, to_sitk
from gdfree.metrics.activity import lesion_activity_case, lesion_activity_summary
from gdfree.metrics.lesions import DetectionRule, bootstrap_pooled_f1, label_lesions, lesion_f1, match_lesions
from gdfree.metrics.patient import percentile_ci, roc_auc
from gdfree.metrics.voxel import dice
from gdfree.preprocess.brain import learned_brain_mask
from gdfree.preprocess.pair import PairConfig, pair_exams

ROLES = ("FLAIR", "T2w", "T1w")


def _followups(phantom: Path, work: Path) -> Path:
    """A BIDS view of the follow-up sessions only (symlinks), predicted once by the shipped network and its
    activity classifier (WORK/pred)."""
    view = work / "followups"
    if not view.exists():
        view.mkdir(parents=True)
        (view / "dataset_description.json").write_text((phantom / "dataset_description.json").read_text())
        for ses in sorted(phantom.glob("sub-*/ses-2")):
            (view / ses.parent.name).mkdir()
            (view / ses.parent.name / "ses-2").symlink_to(ses.resolve())
    from gdfree.demo import PRETRAINED

    pred = work / "pred"
    if not (pred / "predictions.tsv").is_file():
        subprocess.run([sys.executable, "-m", "gdfree", "predict", "--input", str(view), "--out", str(pred),
                        "--model", str(PRETRAINED / "network"), "--activity", str(PRETRAINED / "activity")],
                       check=True)  # fmt: skip
    return pred


HALFWAY = True
"""Form the difference halfway between the exams (``--no-halfway``: the prior alone interpolated)."""


def _pair_config() -> PairConfig:
    return PairConfig(halfway=HALFWAY)


def _pair_arrays(phantom: Path, work: Path, sub: str, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(FLAIR difference, search region, correlation) of one phantom pair, cached under WORK/pairs[-halfway]."""
    cache = work / ("pairs-halfway" if HALFWAY else "pairs") / f"{sub}.npz"  # pairs: the prior alone moved
    if cache.is_file():
        with np.load(cache) as f:
            return f["z"], f["region"], float(f["corr"])
    anat = {s: phantom / sub / f"ses-{s}" / "anat" for s in ("1", "2")}
    exams = {s: {r: read_volume(anat[s] / f"{sub}_ses-{s}_{r}.nii.gz") for r in ROLES} for s in anat}
    paired = pair_exams(exams["2"], exams["1"], brain, _pair_config())
    spacing = exams["2"]["FLAIR"].spacing_mm
    z, region = paired.difference["FLAIR"].data, hyperintense_region(exams["2"]["FLAIR"].data, brain, spacing)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, z=z, region=region, corr=paired.correlation)
    return z, region, paired.correlation


def _p_active_map(pred_act: Path, sub: str, shape: tuple[int, ...]) -> np.ndarray:
    """The activity classifier's p_active painted on its visible lesions (desc-all_dseg), 0 elsewhere."""
    import csv

    out = pred_act / sub / "ses-2" / "anat"
    ids = read_volume(out / f"{sub}_ses-2_desc-all_dseg.nii.gz").data.astype(int)
    with (out / f"{sub}_ses-2_desc-all_lesions.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    lookup = np.zeros(int(ids.max(initial=0)) + 1, np.float32)
    for row in rows:
        lookup[int(row["lesion_id"])] = float(row["p_active"])
    return lookup[ids] if ids.shape == shape else np.zeros(shape, np.float32)


def _phantom_case(phantom: Path, pred: Path, work: Path, sub: str) -> dict:
    truth = phantom / "derivatives" / "phantom" / sub / "ses-2" / "anat"
    brain = read_mask(truth / f"{sub}_ses-2_desc-brain_mask.nii.gz").data
    z, region, corr = _pair_arrays(phantom, work, sub, brain)
    out = pred / sub / "ses-2" / "anat"
    p_enh = read_volume(out / f"{sub}_ses-2_desc-enhancing_probseg.nii.gz")
    return {
        "sub": sub, "spacing": p_enh.spacing_mm, "z": z, "corr": corr, "region": region,
        "change": read_volume(truth / f"{sub}_ses-2_desc-change_dseg.nii.gz").data.astype(np.uint8),
        "lesion": read_mask(truth / f"{sub}_ses-2_label-lesion_mask.nii.gz").data,
        "enhancing": read_mask(truth / f"{sub}_ses-2_label-enhancing_mask.nii.gz").data,
        "p_enh": p_enh.data, "p_act": _p_active_map(pred, sub, p_enh.shape),
    }  # fmt: skip


def _lesion_features(case: dict) -> None:
    """Per reference lesion: labels, max subtraction z, max enhancing probability, p_active, truly new, active, and
    the pair features of the gradient-boosted combination (``pair_x``)."""
    from scipy import ndimage

    labels, n = label_lesions(case["lesion"], case["spacing"])
    ids = np.arange(1, n + 1)

    def per_lesion(fn: Any, values: np.ndarray, where: np.ndarray = labels) -> np.ndarray:
        return np.asarray(fn(values, where, ids), float).reshape(n)

    shell = np.where(case["lesion"], 0, ndimage.grey_dilation(labels, size=(5, 5, 5)))
    case.update(labels=labels, zmax=per_lesion(ndimage.maximum, case["z"]),
                pmax=per_lesion(ndimage.maximum, case["p_enh"]), pact=per_lesion(ndimage.maximum, case["p_act"]),
                new=per_lesion(ndimage.maximum, case["change"] == 1) > 0,
                active=per_lesion(ndimage.maximum, case["enhancing"]) > 0)  # fmt: skip
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] * float(np.prod(case["spacing"]))
    case["pair_x"] = np.stack([
        case["zmax"], per_lesion(ndimage.mean, case["z"]), per_lesion(ndimage.median, case["z"]),
        np.nan_to_num(per_lesion(ndimage.mean, case["z"], shell)), per_lesion(ndimage.mean, case["detected"]),
        np.log(sizes + 1.0),
    ], axis=1) if n else np.zeros((0, 6))  # fmt: skip


def best_threshold(p: np.ndarray, active: np.ndarray) -> float:
    """The threshold of 0.05, 0.10 ... 0.95 at which calling ``p`` gives the best F1 against ``active``."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    f1 = [2 * ((p >= t) & active).sum() / max((p >= t).sum() + active.sum(), 1) for t in grid]
    return float(grid[int(np.argmax(f1))])


def detection(cases: list[dict], found: str, reference: str) -> dict[str, Any]:
    """Pooled detection of each case's mask ``found`` against its mask ``reference`` (msseg rule), with a
    2000-resample patient-bootstrap CI of the F1."""
    rule = DetectionRule()
    counts, dices = [], []
    for c in cases:
        m = match_lesions(c[found], c[reference], c["spacing"], rule)
        counts.append((m.n_ref, m.n_pred, m.tp_ref, m.tp_pred))
        dices.append(dice(c[found], c[reference]))
    arr = np.asarray(counts)
    boot = bootstrap_pooled_f1([arr], rule.name, n_boot=2000, seed=0)[:, 0]
    return {"f1": lesion_f1(rule.name, *(int(v) for v in arr.sum(0))), "f1_ci": list(percentile_ci(boot)[:2]),
            "sensitivity": float(arr[:, 2].sum() / max(arr[:, 0].sum(), 1)),
            "fp_per_scan": float((arr[:, 1] - arr[:, 3]).mean()), "dice": float(np.nanmean(dices)),
            "reference_lesions": int(arr[:, 0].sum())}  # fmt: skip


def _boosted(train: list[dict], test: list[dict], key: str) -> tuple[list[np.ndarray], float]:
    """LightGBM on (logit of ``key``, the pair features) over the training patients' reference lesions; the
    threshold of the best out-of-fold F1 (5 folds by patient); the test patients' scores."""
    import lightgbm as lgb

    def x(case: dict) -> np.ndarray:
        p = np.clip(case[key], 1e-4, 1 - 1e-4)
        return np.column_stack([np.log(p / (1 - p)), case["pair_x"]])

    params: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 7, "min_child_samples": 10,
              "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8, "random_state": 0, "verbose": -1}
    xs = np.concatenate([x(c) for c in train])
    ys = np.concatenate([c["active"] for c in train])
    fold = np.concatenate([np.full(len(c["zmax"]), i % 5) for i, c in enumerate(train)])
    oof = np.zeros(len(ys))
    for f in range(5):
        model = lgb.LGBMClassifier(**params).fit(xs[fold != f], ys[fold != f])
        oof[fold == f] = np.asarray(model.predict_proba(xs[fold == f]))[:, 1]
    model = lgb.LGBMClassifier(**params).fit(xs, ys)
    scores = [np.asarray(model.predict_proba(x(c)))[:, 1] if len(c["zmax"]) else np.zeros(0) for c in test]
    return scores, best_threshold(oof, ys)


COMPARISONS = (("both: network + pair", ("single: network", "pair")),
               ("both: classifier + pair", ("single: activity classifier", "pair")),
               ("both: classifier + pair features, boosted", ("single: activity classifier", "pair")))
"""(arm, the arms it is compared with) for the paired F1 differences."""


def _activity(cases: list[dict], scores: dict[str, list[np.ndarray]], thresholds: dict[str, float],
              comparisons: tuple[tuple[str, tuple[str, ...]], ...] = COMPARISONS) -> dict:  # fmt: skip
    out: dict[str, Any] = {}
    counts = {}
    for arm, per_case in scores.items():
        acts = []
        for case, s in zip(cases, per_case, strict=True):
            ref, _ = lesion_activity_case(case["sub"], case["lesion"], case["enhancing"], case["labels"],
                                          {i + 1: float(v) for i, v in enumerate(s)}, case["spacing"])  # fmt: skip
            acts.append(ref)
        out[arm] = lesion_activity_summary(acts, thresholds[arm])
        called = [a.score >= thresholds[arm] for a in acts]
        counts[arm] = np.array([[(c & a.active).sum(), c.sum(), a.active.sum()] for c, a in zip(called, acts,
                                                                                                 strict=True)])
        active = np.array([a.active.any() for a in acts])
        patient = np.array([float(np.max(s, initial=0.0)) for s in per_case])
        boots = []
        rng = np.random.default_rng(0)
        for _ in range(2000):
            pick = rng.integers(len(acts), size=len(acts))
            boots.append(roc_auc(active[pick], patient[pick]) if 0 < active[pick].sum() < len(pick) else math.nan)
        lo, hi, _ = percentile_ci(boots)
        out[arm]["patient_auc"] = roc_auc(active, patient) if 0 < active.sum() < len(active) else math.nan
        out[arm]["patient_auc_ci"] = [lo, hi]
    out["paired_f1_differences"] = _paired(counts, comparisons)
    return out


def _paired(
    counts: dict[str, np.ndarray], comparisons: tuple[tuple[str, tuple[str, ...]], ...]
) -> dict[str, list[float]]:
    """F1 differences of each combination with its parts, same 2000 patient resamples: [difference, low, high]."""

    def f1(c: np.ndarray) -> float:
        tp, called, active = c.sum(axis=0)
        return 2 * tp / (called + active) if called + active else math.nan

    rng = np.random.default_rng(1)
    n = len(next(iter(counts.values())))
    picks = [rng.integers(n, size=n) for _ in range(2000)]
    out = {}
    for both, parts in comparisons:
        for part in parts:
            if both in counts and part in counts:
                diffs = [f1(counts[both][p]) - f1(counts[part][p]) for p in picks]
                lo, hi, _ = percentile_ci(diffs)
                out[f"{both} - {part}"] = [f1(counts[both]) - f1(counts[part]), lo, hi]
    return out


def _combine(train: list[dict], test: list[dict], key: str) -> tuple[list[np.ndarray], float]:
    """A logistic regression of "active" on (max subtraction z, logit of ``key``) over the training patients'
    reference lesions, and its threshold of the best training F1; the test patients' scores."""
    from sklearn.linear_model import LogisticRegression

    def x(case: dict) -> np.ndarray:
        p = np.clip(case[key], 1e-4, 1 - 1e-4)
        return np.stack([case["zmax"], np.log(p / (1 - p))], axis=1)

    xs = np.concatenate([x(c) for c in train])
    ys = np.concatenate([c["active"] for c in train])
    model = LogisticRegression(C=1.0).fit(xs, ys)
    scores = [np.asarray(model.predict_proba(x(c)))[:, 1] if len(c["zmax"]) else np.zeros(0) for c in test]
    return scores, best_threshold(model.predict_proba(xs)[:, 1], ys)


def phantom_cases(args: argparse.Namespace) -> tuple[list[dict], float, dict[float, float]]:
    """Every phantom follow-up with its pair, shipped-model maps and lesion features, the subtraction's ``k``
    fitted on the first ``args.train`` (and its training F1 by ``k``); each case's subtraction mask is
    ``detected``, its truly new lesions ``new_ref``."""
    pred = _followups(args.phantom, args.work)
    subs = sorted(p.name for p in args.phantom.glob("sub-*") if (p / "ses-2").is_dir())
    cases = [_phantom_case(args.phantom, pred, args.work, s) for s in subs]
    k, k_scores = fit_subtraction_k([(c["z"], c["region"], c["change"] == 1, c["spacing"])
                                     for c in cases[: args.train]])  # fmt: skip
    for c in cases:
        labels, _ = subtraction_lesions(c["z"], c["region"], k, c["spacing"])
        c["detected"], c["new_ref"] = labels > 0, c["change"] == 1
        _lesion_features(c)
    return cases, k, k_scores


def shipped_thresholds() -> dict[str, float]:
    """The shipped network's enhancing threshold and the shipped activity classifier's, by arm name."""
    from gdfree.demo import PRETRAINED
    from gdfree.infer.model import TrainedModel

    activity = json.loads((PRETRAINED / "activity" / "activity.json").read_text())
    return {"single: network": float(TrainedModel.load(PRETRAINED / "network").thresholds["enhancing"]),
            "single: activity classifier": float(activity["threshold"])}  # fmt: skip


def phantom(args: argparse.Namespace) -> dict:
    cases, k, k_scores = phantom_cases(args)
    train, test = cases[: args.train], cases[args.train :]
    found = detection(test, "detected", "new_ref")
    found["new_lesions"] = found.pop("reference_lesions")
    detection_row = {"k": k, **found, "train_f1_by_k": k_scores}
    both_net, t_net = _combine(train, test, "pmax")
    both_act, t_act = _combine(train, test, "pact")
    boosted, t_boost = _boosted(train, test, "pact")
    scores = {"single: network": [c["pmax"] for c in test], "single: activity classifier": [c["pact"] for c in test],
              "pair": [c["zmax"] for c in test], "both: network + pair": both_net,
              "both: classifier + pair": both_act, "both: classifier + pair features, boosted": boosted,
              "every lesion active": [np.ones_like(c["zmax"]) for c in test],
              "truly new (the pair's ceiling)": [c["new"].astype(float) for c in test]}  # fmt: skip
    thresholds = {**shipped_thresholds(), "pair": k, "both: network + pair": t_net, "both: classifier + pair": t_act,
                  "both: classifier + pair features, boosted": t_boost,
                  "every lesion active": 0.5, "truly new (the pair's ceiling)": 0.5}  # fmt: skip
    corr = [c["corr"] for c in cases]
    return {"n_train": len(train), "n_test": len(test), "registration_correlation_min_median": [min(corr),
            float(np.median(corr))], "new_lesion_detection": detection_row,
            "activity": _activity(test, scores, thresholds), "boosted_ablation": _ablation(train, test)}  # fmt: skip


PAIR_FEATURES = ("max", "mean", "median", "shell mean", "share found", "log volume")


def _ablation(train: list[dict], test: list[dict]) -> dict[str, dict[str, Any]]:
    """The boosted combination with subsets of the pair features (beside p_active): lesion F1 and AUC."""
    full = [c["pair_x"] for c in (*train, *test)]
    shell = PAIR_FEATURES.index("shell mean")
    out = {}
    for name, keep in (("all", list(range(len(PAIR_FEATURES)))), ("shell mean only", [shell]),
                       ("all but shell mean", [i for i in range(len(PAIR_FEATURES)) if i != shell])):  # fmt: skip
        for c, f in zip((*train, *test), full, strict=True):
            c["pair_x"] = f[:, keep]
        scores, t = _boosted(train, test, "pact")
        acts = [lesion_activity_case(c["sub"], c["lesion"], c["enhancing"], c["labels"],
                                     {i + 1: float(v) for i, v in enumerate(sc)}, c["spacing"])[0]
                for c, sc in zip(test, scores, strict=True)]  # fmt: skip
        summary = lesion_activity_summary(acts, t, n_boot=200)
        out[name] = {"f1": summary["f1"], "auc": summary["auc"], "threshold": t}
    for c, f in zip((*train, *test), full, strict=True):
        c["pair_x"] = f
    return out


def _to_followup(path: Path, flair: Any, tfm_path: Path) -> np.ndarray:
    """A common-space mask on study 2's FLAIR grid (nearest), through the inverse of the FLAIR -> common
    transform (ITK's convention: it maps common-space points to FLAIR points)."""
    from gdfree.preprocess.registration import read_transform, resample

    moved = resample(to_sitk(read_mask(path)), flair, read_transform(tfm_path), interpolation="nearest", inverse=True)
    return from_sitk(moved).data > 0


def _overlay(name: str, fu: np.ndarray, prior: np.ndarray, z: np.ndarray, gt: np.ndarray, found: np.ndarray,
             out: Path, what: str = "green: change mask (gt.nii.gz); red: subtraction detections") -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zs = np.argsort((gt | found).sum(axis=(0, 1)))[::-1][:3]
    fig, axes = plt.subplots(len(zs), 3, figsize=(12, 4 * len(zs)))
    lo, hi = np.percentile(fu[fu > 0], [1, 99.5])
    for row, sl in zip(np.atleast_2d(axes), zs, strict=True):
        for ax, img, title in zip(row, (prior, fu, z), ("study 1 on study 2", "study 2 FLAIR", "difference (z)"),
                                  strict=True):  # fmt: skip
            kw = ({"cmap": "RdBu_r", "vmin": -8, "vmax": 8} if title.startswith("diff")
                  else {"cmap": "gray", "vmin": lo, "vmax": hi})  # fmt: skip
            ax.imshow(np.rot90(img[:, :, sl]), **kw)
            ax.contour(np.rot90(gt[:, :, sl]), levels=[0.5], colors="lime", linewidths=0.8)
            ax.contour(np.rot90(found[:, :, sl]), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{name} z={sl}: {title}", fontsize=9)
            ax.axis("off")
    fig.suptitle(what, fontsize=10)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=60, bbox_inches="tight")
    plt.close(fig)


def detections_figure(name: str, fu: np.ndarray, prior: np.ndarray, z: np.ndarray, gt: np.ndarray,
                      found: np.ndarray, spacing: Any, out: Path, half: int = 30) -> None:  # fmt: skip
    """Every detection of ``found`` (yellow) at its centre slice with the change mask (green): study 2, study 1 on
    study 2, the difference; titled with the largest change component it lies in and the share of that component
    the detections cover (OUT/<name>.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, n = label_lesions(found, spacing)
    changes, _ = label_lesions(gt, spacing)
    if n == 0:
        return
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n, 4.8), squeeze=False)
    lo, hi = np.percentile(fu[fu > 0], [1, 99.5])
    for j in range(n):
        one = labels == j + 1
        ids = [int(i) for i in np.unique(changes[one]) if i]
        size = max(((changes == i).sum(), i) for i in ids) if ids else (0, 0)
        where = (f"in a {size[0]:,}-voxel change,\n{(found & (changes == size[1])).sum() / size[0]:.0%} of it detected"
                 if ids else "touches no change")  # fmt: skip
        x, y, sl = (int(c) for c in np.rint(np.argwhere(one).mean(axis=0)))
        box = (slice(max(x - half, 0), x + half), slice(max(y - half, 0), y + half), sl)
        vol = one.sum() * float(np.prod(spacing))
        for row, (img, title) in enumerate(((fu, "study 2"), (prior, "study 1"), (z, "difference"))):
            ax = axes[row, j]
            kw = ({"cmap": "RdBu_r", "vmin": -8, "vmax": 8} if row == 2 else {"cmap": "gray", "vmin": lo, "vmax": hi})
            ax.imshow(np.rot90(img[box]), **kw)
            ax.contour(np.rot90(gt[box]), levels=[0.5], colors="lime", linewidths=0.5)
            ax.contour(np.rot90(one[box]), levels=[0.5], colors="yellow", linewidths=0.7)
            ax.set_title(f"#{j + 1} {vol:.0f} mm3\n{where}" if row == 0 else title, fontsize=6)
            ax.axis("off")
    fig.suptitle(f"{name}: each detection (yellow) and the change mask (green): study 2 FLAIR, study 1 on study 2, "
                 "the difference", fontsize=7)  # fmt: skip
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=72)
    plt.close(fig)


def any_overlap(found: np.ndarray, gt: np.ndarray, spacing: Any) -> dict[str, int]:
    """Found changes and false detections by the ``any`` rule (one shared voxel), beside the msseg rule's: the
    msseg rule calls a detection false when the change component it lies in is mostly outside every detection, as
    a small new focus inside a large connected change component is (docs/longitudinal.md)."""
    m = match_lesions(found, gt, spacing, DetectionRule(name="any"))
    return {"detected": m.tp_ref, "of": m.n_ref, "false_found": m.n_pred - m.tp_pred}


def real(args: argparse.Namespace, k_phantom: float | None) -> dict:
    """New lesions on the shared longitudinal patients (FLAIR, plus T2W where both studies have it)."""
    rule = DetectionRule()
    cases = []
    for folder in sorted(p for p in args.real.glob("patient*") if p.is_dir()):
        fu = {"FLAIR": read_volume(folder / "study2_FLAIR.nii.gz")}
        pr = {"FLAIR": read_volume(folder / "study1_FLAIR.nii.gz")}
        flair = to_sitk(fu["FLAIR"])
        brain = learned_brain_mask(fu["FLAIR"])  # upstream's patient19 mask holds the scalp (docs/longitudinal.md)
        gt = _to_followup(folder / "gt.nii.gz", flair, folder / "study2_FLAIR_to_common_space.txt")
        paired = pair_exams(fu, pr, brain, _pair_config())
        spacing = fu["FLAIR"].spacing_mm
        cases.append({"name": folder.name, "z": paired.difference["FLAIR"].data, "gt": gt & brain, "spacing": spacing,
                      "region": hyperintense_region(fu["FLAIR"].data, brain, spacing), "corr": paired.correlation,
                      "fu": fu["FLAIR"].data, "prior": paired.prior["FLAIR"].data,
                      "problems": paired.problems})  # fmt: skip
    rows = []
    for i, c in enumerate(cases):
        others = [o for j, o in enumerate(cases) if j != i]
        k_real, _ = fit_subtraction_k([(o["z"], o["region"], o["gt"], o["spacing"]) for o in others])
        gt_labels, n_gt = label_lesions(c["gt"], c["spacing"])
        from scipy import ndimage

        signs = np.asarray(ndimage.median(c["z"], gt_labels, np.arange(1, n_gt + 1)), float).reshape(n_gt)
        row = {"patient": c["name"], "registration_correlation": round(c["corr"], 3), "problems": c["problems"],
               "change_lesions": n_gt, "change_lesions_brighter": int((signs > 0).sum())}  # fmt: skip
        for label, k in (("k_phantom", k_phantom), ("k_other_real", k_real)):
            if k is None:
                continue
            labels, _ = subtraction_lesions(c["z"], c["region"], k, c["spacing"])
            m = match_lesions(labels > 0, c["gt"], c["spacing"], rule)
            row[label] = {"k": k, "detected": m.tp_ref, "of": m.n_ref, "true_found": m.tp_pred,
                          "false_found": m.n_pred - m.tp_pred, "f1": m.f1, "dice": dice(labels > 0, c["gt"]),
                          "any_overlap": any_overlap(labels > 0, c["gt"], c["spacing"])}  # fmt: skip
            if label == "k_phantom" or k_phantom is None:
                figs = args.work / ("fig" if HALFWAY else "fig-prior-only")
                _overlay(c["name"], c["fu"], c["prior"], c["z"], c["gt"], labels > 0, figs)
        rows.append(row)
    return {"patients": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantom", type=Path)
    parser.add_argument("--real", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("docs/longitudinal.json"))
    parser.add_argument("--key", default="phantom", help="where the phantom's result goes in OUT")
    parser.add_argument("--halfway", action=argparse.BooleanOptionalAction, default=True,
                        help="differences formed halfway between the exams (default), or with the prior alone moved")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    global HALFWAY
    HALFWAY = args.halfway
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.phantom:
        result[args.key] = phantom(args)
    if args.real:
        k = result.get(args.key, {}).get("new_lesion_detection", {}).get("k")
        result["real" if HALFWAY else "real-prior-only"] = real(args, k)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps(result, indent=1, default=float)[:6000])


if __name__ == "__main__":
    main()
