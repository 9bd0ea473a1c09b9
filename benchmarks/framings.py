"""Three framings of one question, one benchmark: segment enhancement, synthesise the post-Gd T1w, score lesions.

Phantom seed 0 at 2 mm, strengths 1 and 0: ``cohort-<s>`` (sub-001..<subjects>, split by patient with the
demo's split and ``--test-fraction``) and ``cohort-<s>-heldout`` (``--heldout`` more patients in no split);
every model is tested on the same test + held-out patients. Models (``--only NAME``, one per process,
resumable: a model whose ``row.json`` matches the options is not redone):

    segmentation-<s>   enhancing + lesion heads (the product model)
    translation-<s>    the t1gd head alone: enhancement read from the synthetic post-Gd T1w, calibrated on
                       validation patients
    multitask-<s>      enhancing + lesion + t1gd heads (the enhancing head decides)
    oracle-1           segmentation with the post-Gd T1w as an input (the ceiling)
    lesion-<s>         LightGBM on the features of every reference lesion, fitted on ``cohort-<s>-activity``
                       (a fresh phantom cohort, seed + 1: phantoms are free), calibrated on its validation part
    lesion+net-1       the same with the segmentation-1 network's probability maps as features (fitted on the
                       activity cohort, which that network never saw)
    chance-lesions-1   every lesion of segmentation-1's lesion head called active (no activity cue)

``--collect`` tabulates: per model enhancing-lesion F1 (msseg) with a patient-bootstrap 95% CI, sensitivity at
1 FP/scan, patient AUC, lesion-level activity AUC on reference lesions (a network's score of a lesion: its
highest enhancing probability inside), PSNR/SSIM/MAE of the synthetic post-Gd T1w (T1w units; brain, and
inside enhancing lesions), seconds per exam; the ratio to the oracle's F1 and the chance-corrected ratio
(model - chance) / (oracle - chance), both with paired patient-bootstrap CIs; and the leakage checks at
strength 0 (AUC CIs, and the synthetic image's enhancement in active minus chronic lesions).

    python benchmarks/framings.py --out /tmp/framings --only segmentation-1 [--steps 1200] [--device cuda]
    python benchmarks/framings.py --out /tmp/framings --collect
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.demo import demo_config, evaluate_run
from gdfree.io.tables import write_json
from gdfree.metrics.activity import LesionActivity, lesion_activity_summary
from gdfree.metrics.lesions import bootstrap_pooled_f1, label_lesions
from gdfree.metrics.patient import percentile_ci

N_BOOT = 2000
CRITERION = 0.8
NETWORKS = {  # name -> heads, head weights, oracle
    "segmentation": (("enhancing", "lesion"), (1.0, 0.3), False),
    "translation": (("t1gd",), (1.0,), False),
    "multitask": (("enhancing", "lesion", "t1gd"), (1.0, 0.3, 1.0), False),
    "oracle": (("enhancing", "lesion"), (1.0, 0.3), True),
}
MODELS = ("segmentation-1", "translation-1", "multitask-1", "oracle-1", "lesion-1", "lesion+net-1",
          "chance-lesions-1", "segmentation-0", "translation-0", "lesion-0")  # fmt: skip


def _cohort(args: argparse.Namespace, strength: float, part: str = "") -> Path:
    """``cohort-<s>`` (part ""), its ``-heldout`` patients or the activity classifier's own ``-activity``
    cohort, synthesised if absent."""
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    n, seed, first = {"": (args.subjects, args.seed, 0), "-heldout": (args.heldout, args.seed, args.subjects),
                      "-activity": (args.activity_subjects, args.seed + 1, 0)}[part]  # fmt: skip
    path = args.out / f"cohort-{strength:g}{part}"
    table = path / "participants.tsv"
    if not table.is_file() or len(table.read_text().strip().splitlines()) - 1 != n:
        cfg = PhantomConfig(resolution_mm=2, signature_strength=strength)
        write_cohort(path, cfg, n, seed, jobs=args.jobs, overwrite=True, first=first)
    return path


def _read(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.load(path).dataobj)


def _ref_masks(cohort: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    """Reference lesion, enhancing and brain masks of a phantom case, and its spacing."""
    import nibabel as nib

    folder = cohort / "derivatives" / "phantom" / case_id / "anat"
    lesion = nib.load(folder / f"{case_id}_label-lesion_mask.nii.gz")
    spacing = tuple(float(s) for s in lesion.header.get_zooms()[:3])
    return (np.asarray(lesion.dataobj) > 0, _read(folder / f"{case_id}_label-enhancing_mask.nii.gz") > 0,
            _read(folder / f"{case_id}_desc-brain_mask.nii.gz") > 0, spacing)  # fmt: skip


def _test_sets(work: Path, cohort: Path, heldout: Path) -> list[tuple[Path, Path, str]]:
    """(reference dataset, prediction folder, case id) of every test patient, in the evaluation's order."""
    run_split = json.loads((work / "run" / "split.json").read_text())
    out = [(cohort, work / "predictions", c.split(":")[-1]) for c in run_split["test_cases"]]
    out += [(heldout, work / "predictions-heldout", p.name) for p in sorted(heldout.glob("sub-*")) if p.is_dir()]
    return out


def _test_ids(args: argparse.Namespace, cohort: Path) -> set[str]:
    """The test patients of ``cohort`` under the networks' split (the demo's, with ``--test-fraction``),
    checked against a trained network's split.json where one exists."""
    from gdfree.io.adapters import discover
    from gdfree.train.splits import split_patients

    split = dataclasses.replace(demo_config(cohort, args.steps, args.seed).split, test_fraction=args.test_fraction)
    keys = sorted({f"{cohort}:{c.subject}" for c in discover(cohort)})
    test = {f"sub-{k.rsplit(':', 1)[1]}" for k in split_patients(keys, split)["test"]}
    for name in NETWORKS:
        saved = args.out / f"{name}-{cohort.name.removeprefix('cohort-')}" / "run" / "split.json"
        if saved.is_file() and {c.split(":")[-1] for c in json.loads(saved.read_text())["test_cases"]} != test:
            raise SystemExit(f"{saved}: its test patients differ from the split computed here")
    return test


def _network_lesion_scores(work: Path, cohort: Path, heldout: Path) -> list[LesionActivity]:
    """Each reference lesion scored by the network's highest enhancing probability inside it."""
    from scipy import ndimage

    items = []
    for ref_dir, pred_dir, case in _test_sets(work, cohort, heldout):
        lesion, enh, _, spacing = _ref_masks(ref_dir, case)
        prob = _read(pred_dir / case / "anat" / f"{case}_desc-enhancing_probseg.nii.gz")
        labels, n = label_lesions(lesion, spacing)
        ids = np.arange(1, n + 1)
        active = np.asarray(ndimage.maximum(enh, labels, ids), float).reshape(n) > 0
        score = np.asarray(ndimage.maximum(prob, labels, ids), float).reshape(n)
        items.append(LesionActivity(case, active, score))
    return items


def _synthesis_checks(work: Path, cohort: Path, heldout: Path) -> dict[str, Any]:
    """Mean enhancement of the synthetic image (synthetic minus input T1w, in T1w brain SDs) inside active and
    chronic reference lesions; per patient the difference of the two means, with a patient-bootstrap CI."""
    diffs, active_means, chronic_means = [], [], []
    for ref_dir, pred_dir, case in _test_sets(work, cohort, heldout):
        lesion, enh, brain, spacing = _ref_masks(ref_dir, case)
        t1 = _read(ref_dir / case / "anat" / f"{case}_T1w.nii.gz").astype(np.float64)
        synth = _read(pred_dir / case / "anat" / f"{case}_desc-synthT1gd_T1w.nii.gz").astype(np.float64)
        e = (synth - t1) / t1[brain].std()
        labels, n = label_lesions(lesion, spacing)
        per = [(bool(enh[labels == i].any()), float(e[labels == i].mean())) for i in range(1, n + 1)]
        a = [v for act, v in per if act]
        c = [v for act, v in per if not act]
        active_means += a
        chronic_means += c
        if a and c:
            diffs.append(np.mean(a) - np.mean(c))
    rng = np.random.default_rng(0)
    boot = [np.mean(rng.choice(diffs, len(diffs))) for _ in range(N_BOOT)] if diffs else []
    low, high, _ = percentile_ci(boot)
    return {"active_minus_chronic": float(np.mean(diffs)) if diffs else math.nan, "ci": [low, high],
            "n_patients": len(diffs), "active_mean": float(np.mean(active_means)) if active_means else math.nan,
            "chronic_mean": float(np.mean(chronic_means)) if chronic_means else math.nan}  # fmt: skip


def _row(name: str, results: list[Any], evaluation: dict[str, Any], lesion_level: dict[str, Any],
         seconds: float, extra: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    pooled, patient = evaluation["pooled_lesions"], evaluation.get("patient", {})
    per_case = [r.row for r in results]

    def mean(key: str) -> float:
        values = [r[key] for r in per_case if key in r and r[key] is not None and math.isfinite(r[key])]
        return float(np.mean(values)) if values else math.nan

    return {
        "model": name,
        "test_patients": len(results),
        "active_test_patients": patient.get("n_active"),
        "lesion_f1": pooled["lesion_f1"],
        "lesion_f1_ci": pooled["lesion_f1_ci"],
        "fp_per_scan": pooled["fp_per_scan"],
        "sensitivity_at_1fp": evaluation["froc"]["sensitivity_at_fp"]["1.0"],
        "patient_auc": patient.get("auc"),
        "patient_auc_ci": patient.get("auc_ci"),
        "lesion_auc": lesion_level["auc"],
        "lesion_auc_ci": lesion_level["auc_ci"],
        "synth": {
            k: mean(k)
            for k in (
                "synth_psnr_db",
                "synth_ssim",
                "synth_mae",
                "synth_ref_psnr_db",
                "synth_ref_ssim",
                "synth_ref_mae",
            )
        },
        "seconds_per_exam": seconds / max(len(results), 1),
        "test_cases": [r.case_id for r in results],
        "lesion_counts": [list(r.match.counts) for r in results],
        **extra,
    }


def _network(args: argparse.Namespace, name: str, strength: float, work: Path) -> dict[str, Any]:
    from gdfree.train import train

    heads, weights, oracle = NETWORKS[name.split("-")[0]]
    cohort = _cohort(args, strength)
    cfg = demo_config(cohort, args.steps, args.seed)
    cfg = dataclasses.replace(cfg, heads=heads, head_weights=weights, workers=args.workers,
                              split=dataclasses.replace(cfg.split, test_fraction=args.test_fraction))  # fmt: skip
    if oracle:
        cfg = dataclasses.replace(cfg, modalities=(*cfg.modalities, "T1gd"), oracle=True)
    train_s = None
    if not (work / "run" / "model.json").is_file():
        shutil.rmtree(work / "run", ignore_errors=True)
        t0 = time.perf_counter()
        train(cfg, work / "run", device=args.device)
        train_s = time.perf_counter() - t0
    heldout = _cohort(args, strength, "-heldout")
    results, evaluation, _, timings = evaluate_run(work, cohort, device=args.device, heldout=heldout)
    extra: dict[str, Any] = {"steps": args.steps, "train_s": train_s}
    if "t1gd" in heads:
        extra["synthesis_check"] = _synthesis_checks(work, cohort, heldout)
    lesion_level = lesion_activity_summary(_network_lesion_scores(work, cohort, heldout), 0.5, N_BOOT)
    return _row(name, results, evaluation, lesion_level, timings["prediction_s"], extra)


def _painted_results(cases: list[tuple[Path, str, np.ndarray, np.ndarray]], threshold: float) -> tuple[Any, Any]:
    """Evaluate per-lesion scores painted onto their lesions' voxels with the segmentation framing's code."""
    from gdfree.evaluate import EvaluationConfig
    from gdfree.evaluate.cohort import evaluate_case, summarize

    config = EvaluationConfig(threshold=threshold)
    results = []
    for ref_dir, case, ids, p in cases:
        _, enh, brain, spacing = _ref_masks(ref_dir, case)
        prob = np.concatenate([[0.0], p])[ids].astype(np.float32)
        results.append(evaluate_case(enh, spacing, case_id=case, prob=prob, brain=brain, config=config))
    return results, summarize(results, config)


def _lesion_framing(args: argparse.Namespace, name: str, strength: float, work: Path) -> dict[str, Any]:
    from gdfree.activity import ActivityClassifier, ActivityConfig, fit_activity_dataset
    from gdfree.activity.classifier import feature_image
    from gdfree.activity.features import label_case_lesions, lesion_features
    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover
    from gdfree.train.config import SplitConfig

    cohort, heldout, activity_cohort = (_cohort(args, strength, p) for p in ("", "-heldout", "-activity"))
    network = args.out / f"segmentation-{strength:g}" / "run" if "+net" in name else None
    if network is not None and not (network / "model.json").is_file():
        raise SystemExit(f"{name}: train segmentation-{strength:g} first")
    if not (work / "classifier" / "activity.json").is_file():
        fit_activity_dataset([activity_cohort], work / "classifier", split=SplitConfig(test_fraction=0.0,
                             seed=args.seed), cfg=ActivityConfig(seed=args.seed), network=network)  # fmt: skip
    clf = ActivityClassifier.load(work / "classifier")
    model = TrainedModel.load(network) if network is not None else None
    test_ids = _test_ids(args, cohort)
    cases, scored = [], []
    t0 = time.perf_counter()
    for ref_dir in (cohort, heldout):
        for files in discover(ref_dir):
            if ref_dir == cohort and files.case_id not in test_ids:
                continue
            case = load_array_case(files, clf.modalities, ("lesion", "enhancing"),
                                   normalisation=clf.meta["normalisation"])  # the network's, for its maps too
            clf.refuse_if_seen(case.case_id, case.fingerprints)
            ids, n = label_case_lesions(case.labels["lesion"], case.spacing_mm)
            probs = None
            if model is not None:
                maps = model.probabilities(case.image, brain=case.brain)
                probs = {h: np.where(case.brain, maps[i], 0.0) for i, h in enumerate(model.heads)}
            image = feature_image(case, clf.modalities, clf.feature_reference, clf.meta["normalisation"])
            p = clf.p_active(lesion_features(image, ids, n, case.spacing_mm, probs))
            cases.append((ref_dir, case.case_id, ids, p))
            enh = case.labels["enhancing"]
            scored.append(LesionActivity(case.case_id, np.array([bool(enh[ids == i].any()) for i in range(1, n + 1)]),
                                         p.astype(float)))  # fmt: skip
    seconds = time.perf_counter() - t0
    results, evaluation = _painted_results(cases, clf.threshold)
    lesion_level = lesion_activity_summary(scored, clf.threshold, N_BOOT)
    return _row(name, results, evaluation, lesion_level, seconds,
                {"classifier_validation": clf.meta["validation"], "lesion_f1_classification": lesion_level["f1"],
                 "lesion_f1_classification_ci": lesion_level["f1_ci"]})  # fmt: skip


def _chance(args: argparse.Namespace, name: str, strength: float, work: Path) -> dict[str, Any]:
    """Every lesion of the segmentation model's lesion head called active (probability 1)."""
    seg = args.out / f"segmentation-{strength:g}"
    cohort, heldout = _cohort(args, strength), _cohort(args, strength, "-heldout")
    cases = []
    for ref_dir, pred_dir, case in _test_sets(seg, cohort, heldout):
        mask = _read(pred_dir / case / "anat" / f"{case}_desc-lesion_mask.nii.gz") > 0
        _, _, _, spacing = _ref_masks(ref_dir, case)
        ids, n = label_lesions(mask, spacing)
        cases.append((ref_dir, case, ids, np.ones(n)))
    results, evaluation = _painted_results(cases, 0.5)
    lesion_level = {"auc": math.nan, "auc_ci": [math.nan, math.nan]}
    return _row(name, results, evaluation, lesion_level, 0.0, {})


def _size_alone(args: argparse.Namespace, strength: float) -> dict[str, Any]:
    """Lesion-level AUC of lesion volume alone on the test patients' reference lesions: what a lesion's size
    tells about its activity label without any image (active = holds an enhancing-label voxel)."""
    from scipy import ndimage

    cohort, heldout = _cohort(args, strength), _cohort(args, strength, "-heldout")
    test = _test_ids(args, cohort)
    items = []
    for ref_dir in (cohort, heldout):
        for case in sorted(p.name for p in ref_dir.glob("sub-*") if p.is_dir()):
            if ref_dir == cohort and case not in test:
                continue
            lesion, enh, _, spacing = _ref_masks(ref_dir, case)
            labels, n = label_lesions(lesion, spacing)
            ids = np.arange(1, n + 1)
            active = np.asarray(ndimage.maximum(enh, labels, ids), float).reshape(n) > 0
            volume = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(float)
            items.append(LesionActivity(case, active, volume))
    return lesion_activity_summary(items, math.inf, N_BOOT)


def _ratio(rows: dict[str, dict[str, Any]], model: str, oracle: str, chance: str) -> str:
    """F1 ratio to the oracle and chance-corrected ratio, with paired patient-bootstrap CIs."""
    if any(k not in rows for k in (model, oracle, chance)):
        return "n/a"
    if len({tuple(rows[k]["test_cases"]) for k in (model, oracle, chance)}) != 1:
        return "different test patients"
    boot = bootstrap_pooled_f1([rows[k]["lesion_counts"] for k in (model, oracle, chance)], "msseg",
                               n_boot=N_BOOT, seed=0)  # fmt: skip
    m, o, c = (rows[k]["lesion_f1"] for k in (model, oracle, chance))
    with np.errstate(divide="ignore", invalid="ignore"):
        plain = percentile_ci(boot[:, 0] / boot[:, 1])
        corrected = percentile_ci((boot[:, 0] - boot[:, 2]) / (boot[:, 1] - boot[:, 2]))
    return (f"{m / o:.2f} [{plain[0]:.2f}, {plain[1]:.2f}]; chance-corrected {(m - c) / (o - c):.2f} "
            f"[{corrected[0]:.2f}, {corrected[1]:.2f}]")  # fmt: skip


def _fmt(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def _ci(values: Any) -> str:
    values = values or [None, None]
    return f"[{_fmt(values[0])}, {_fmt(values[1])}]"


def collect(args: argparse.Namespace) -> str:
    rows = {}
    for name in MODELS:
        path = args.out / name / "row.json"
        if path.is_file():
            rows[name] = json.loads(path.read_text())["row"]
    lines = ["| framing | F1 [95% CI] | sens @ 1 FP/scan | FP/scan | patient AUC [CI] | lesion AUC [CI] | "
             "synthetic T1gd PSNR / SSIM / MAE (brain; enhancing) | s/exam | F1 / oracle; chance-corrected |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, r in rows.items():
        s = r["synth"]
        synth = "" if s["synth_psnr_db"] is None else (
            f"{_fmt(s['synth_psnr_db'])} / {_fmt(s['synth_ssim'])} / {_fmt(s['synth_mae'])}; "
            f"{_fmt(s['synth_ref_psnr_db'])} / {_fmt(s['synth_ref_ssim'])} / {_fmt(s['synth_ref_mae'])}")  # fmt: skip
        ratio = "" if name.startswith(("oracle", "chance")) else _ratio(rows, name, "oracle-1", "chance-lesions-1")
        lines.append(f"| {name} | {_fmt(r['lesion_f1'])} {_ci(r['lesion_f1_ci'])} | {_fmt(r['sensitivity_at_1fp'])} "
                     f"| {r['fp_per_scan']:.2f} | {_fmt(r['patient_auc'])} {_ci(r['patient_auc_ci'])} | "
                     f"{_fmt(r['lesion_auc'])} {_ci(r['lesion_auc_ci'])} | {synth} | {r['seconds_per_exam']:.2f} | "
                     f"{ratio} |")  # fmt: skip
    checks = []
    for n, r in rows.items():
        if "synthesis_check" in r:
            c = r["synthesis_check"]
            checks.append(
                f"- {n}: synthetic enhancement, active minus chronic lesions "
                f"{_fmt(c['active_minus_chronic'])} {_ci(c['ci'])} T1w SDs ({c['n_patients']} patients)"
            )
    for strength in (1.0, 0.0):
        path = args.out / f"size-alone-{strength:g}.json"
        if not path.is_file():
            write_json(path, _size_alone(args, strength))
        size = json.loads(path.read_text())
        checks.append(f"- strength {strength:g}: lesion volume alone ranks the test lesions at lesion-level AUC "
                      f"{_fmt(size['auc'])} {_ci(size['auc_ci'])} (no image)")  # fmt: skip
    first = next(iter(rows.values()), {})
    same = len({tuple(r["test_cases"]) for r in rows.values()}) == 1
    footer = (
        f"\n{first.get('test_patients', 0)} test patients ({first.get('active_test_patients')} active), the "
        f"same for every model: {same}. Enhancing lesions, msseg rule; {N_BOOT} patient-bootstrap resamples, "
        f"seed 0. Options: {json.dumps(_key(args))}."
    )
    table = "\n".join(lines) + "\n" + footer + "\n\nLeakage and chance checks:\n" + "\n".join(checks)
    (args.out / "framings.md").write_text(table + "\n")
    write_json(args.out / "framings.json", {"rows": rows, "args": _key(args)})
    return table


def _key(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in ("subjects", "heldout", "activity_subjects", "steps", "seed", "test_fraction")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=MODELS, help="make (train if needed, then score) this model")
    parser.add_argument("--collect", action="store_true", help="tabulate the models already made")
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--heldout", type=int, default=100)
    parser.add_argument("--activity-subjects", type=int, default=100)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader processes per training run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.only:
        name, strength = args.only, float(args.only.rsplit("-", 1)[1])
        work = args.out / name
        saved = json.loads((work / "row.json").read_text()) if (work / "row.json").is_file() else None
        if saved and saved["key"] == _key(args):
            print(f"{name}: done ({work / 'row.json'})")
            return
        work.mkdir(parents=True, exist_ok=True)
        kind = name.split("-")[0]
        row = (_network(args, name, strength, work) if kind in NETWORKS
               else _lesion_framing(args, name, strength, work) if kind.startswith("lesion")
               else _chance(args, name, strength, work))  # fmt: skip
        write_json(work / "row.json", {"key": _key(args), "row": row})
        print(name, json.dumps({k: v for k, v in row.items() if k not in ("test_cases", "lesion_counts")}))
    if args.collect:
        print(collect(args))


if __name__ == "__main__":
    main()
