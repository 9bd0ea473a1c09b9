"""Learning from little data (issue 17): augmentation arms in the small-data regime, and sim-to-real.

``small-data``: one 2 mm phantom cohort (seed 0, signature strength 1): a pool of 20 training patients, 2
fixed validation patients (threshold calibration only) and 50 test patients (sub-101 onwards, in no pool).
For every training-set size (4, 8, 16 patients: the first n of a seeded permutation of the pool, so seeds
differ in patients too), seed (0, 1, 2) and arm, a small network is trained with the same steps; arms are
cumulative:

- ``none``: no augmentation (``augment: 0``);
- ``torchio``: gdfree's default TorchIO augmentation (flip, affine, bias, noise);
- ``lesion_sim``: + lesion simulation on half the patches (CarveMix, insertion, removal; equal weights);
- ``generative``: + a conditional GAN trained on the same training patients replacing a quarter of the
  patches (label maps with up to 2 new library lesions, 30 % active).

Every model is tested on the same 50 patients: pooled enhancing-lesion F1 (msseg rule, the model's own
threshold from its validation patients), lesion-level activity AUC (each reference lesion scored by the
maximum enhancing probability inside it, active if it holds enhancing voxels) and patient AUC (maximum
enhancing probability in the brain). Each cell is the mean over seeds with a 95% CI from one patient
bootstrap shared by all models (the test patients resampled, every seed's model scored on each resample),
and the difference to ``none`` at the same size with its paired CI.

``sim-to-real``: the all-lesion head trained on phantoms alone, 40 subjects of the default phantom vs 40
of the domain-randomised one (same seed: same anatomy and lesions, other appearance; same config and
steps) vs 40 domain-randomised ones of which about half also have a confluent periventricular lesion
(``drc``), then ``gdfree prepare --no-register --spacing 2`` and prediction on the real shared cases
patient07 and patient19 (open_ms_data, MNI space), scored against their consensus lesion masks (resampled
to 2 mm, nearest neighbour): Dice, lesion F1 (msseg rule), false-positive lesions. Writes overlays on
FLAIR for each model and case.

    python benchmarks/augmentation.py small-data --out /tmp/aug [--sizes 4,8,16] [--seeds 0,1,2] [--jobs 2]
    python benchmarks/augmentation.py sim-to-real --out /tmp/s2r [--steps 1500]
    python benchmarks/augmentation.py figures --out docs/img --prepared /tmp/s2r/real2mm

Runs whose ``result.json`` exists are not redone, so either command continues after an interruption.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

ARMS = ("none", "torchio", "lesion_sim", "generative")
POOL, VAL, TEST_FIRST = 20, 2, 100
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "open_ms_data" / "cross_sectional"


# ---------------------------------------------------------------------------------------------------------
# small data


def _cohorts(out: Path, n_test: int) -> tuple[Path, Path]:
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    cohort, test = out / "cohort", out / "test"
    if not (cohort / "participants.tsv").is_file():
        write_cohort(cohort, PhantomConfig(resolution_mm=2), POOL + VAL, seed=0, jobs=2, overwrite=True)
    if not (test / "participants.tsv").is_file():
        write_cohort(test, PhantomConfig(resolution_mm=2), n_test, seed=0, jobs=2, overwrite=True, first=TEST_FIRST)
    return cohort, test


def small_data_config(cohort: Path, arm: str, size: int, seed: int, steps: int) -> Any:
    """The training config of one run (a small network: the benchmark trains 36 of them on a CPU)."""
    from gdfree.data.generative import GenerativeConfig
    from gdfree.data.lesion_sim import LesionSimConfig
    from gdfree.phantom.cohort import subject_label
    from gdfree.train import DatasetSpec, SplitConfig, TrainConfig

    labels = [subject_label(i, POOL + VAL) for i in range(POOL + VAL)]
    order = np.random.default_rng(seed).permutation(POOL)
    train = tuple(f"{cohort}:{labels[i]}" for i in sorted(order[:size]))
    val = tuple(f"{cohort}:{labels[i]}" for i in range(POOL, POOL + VAL))
    return TrainConfig(
        datasets=(DatasetSpec(str(cohort)),), channels=(8, 16, 32, 64), strides=(2, 2, 2, 2), num_res_units=1,
        full_res_channels=4, patch_size=32, batch_size=4, max_steps=steps, val_every=steps, warmup_steps=20,
        augment=0.0 if arm == "none" else 1.0,
        lesion_sim=LesionSimConfig(probability=0.5 if arm in ("lesion_sim", "generative") else 0.0),
        generative=GenerativeConfig(kind="cgan" if arm == "generative" else "none", steps=200, fraction=0.25),
        seed=seed, split=SplitConfig(test_fraction=0.0, val_subjects=val, train_subjects=train, seed=seed),
    )  # fmt: skip


_TEST_CACHE: dict[str, list[Any]] = {}


def _test_cases(test: Path) -> list[Any]:
    if str(test) not in _TEST_CACHE:
        from gdfree.data.cases import load_array_case
        from gdfree.io.adapters import discover

        _TEST_CACHE[str(test)] = [load_array_case(c, ("T1w", "T2w", "FLAIR"), ("enhancing", "lesion"))
                                  for c in discover(test)]  # fmt: skip
    return _TEST_CACHE[str(test)]


def score_model(run: Path, cases: list[Any]) -> dict[str, Any]:
    """Per test patient: enhancing-lesion counts of the model's masks (its threshold and minimum volume, its
    rule), patient score (maximum enhancing probability in the brain), and per reference lesion its maximum
    enhancing probability and activity."""
    from gdfree.infer.model import TrainedModel
    from gdfree.metrics.lesions import label_lesions, match_lesions

    model = TrainedModel.load(run)
    head = model.heads.index("enhancing")
    rule = model.lesion_rule()
    patients, lesions = [], []
    for i, case in enumerate(cases):
        probs = model.probabilities(case.image)
        prob = probs[head]
        enh, les = case.labels["enhancing"], case.labels["lesion"]
        pred = model.masks({"enhancing": prob}, case.spacing_mm)["enhancing"]
        match = match_lesions(pred, enh, case.spacing_mm, rule)
        patients.append({"case_id": case.case_id, "counts": [int(c) for c in match.counts],
                         "score": float(prob[case.brain].max()), "active": bool(enh.any())})  # fmt: skip
        labels, _ = label_lesions(les | enh, case.spacing_mm)
        for j, sl in enumerate(ndimage.find_objects(labels), start=1):
            inside = labels[sl] == j
            lesions.append({"patient": i, "score": float(prob[sl][inside].max()),
                            "active": bool(enh[sl][inside].any())})  # fmt: skip
    return {"patients": patients, "lesions": lesions, "threshold": model.thresholds["enhancing"]}


def _one_run(args: tuple[Path, Path, Path, str, int, int, int]) -> str:
    out, cohort, test, arm, size, seed, steps = args
    import torch

    torch.set_num_threads(1)
    from gdfree.train import train

    folder = out / "runs" / f"{arm}-n{size}-s{seed}"
    if (folder / "result.json").is_file():
        return folder.name
    if not (folder / "run" / "model.json").is_file():
        import shutil

        shutil.rmtree(folder / "run", ignore_errors=True)
        train(small_data_config(cohort, arm, size, seed, steps), folder / "run")
    result = score_model(folder / "run", _test_cases(test))
    quality = folder / "run" / "generator_quality.json"
    if quality.is_file():
        result["generator_quality"] = json.loads(quality.read_text())
    (folder / "result.json").write_text(json.dumps(result))
    return folder.name


def _auc_matrix(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise ROC AUC (Mann-Whitney with ties) of (B, n) labels and scores; NaN for a one-class row."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    pos = labels.sum(axis=1)
    neg = labels.shape[1] - pos
    u = (ranks * labels).sum(axis=1) - pos * (pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


def _metrics(result: dict[str, Any], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Pooled lesion F1, lesion AUC and patient AUC for each resample row of patient indices ``idx``."""
    from gdfree.metrics.lesions import lesion_f1

    counts = np.array([p["counts"] for p in result["patients"]])
    sums = counts[idx].sum(axis=1)
    f1 = np.array([lesion_f1("msseg", *(int(v) for v in row)) for row in sums])
    y = np.array([p["active"] for p in result["patients"]], float)
    s = np.array([p["score"] for p in result["patients"]])
    patient_auc = _auc_matrix(y[idx], s[idx])
    by_patient: dict[int, list[tuple[float, bool]]] = {}
    for les in result["lesions"]:
        by_patient.setdefault(les["patient"], []).append((les["score"], les["active"]))
    lesion_auc = np.empty(len(idx))
    for b, row in enumerate(idx):  # clustered: a resampled patient brings all its lesions
        pairs = [pair for p in row for pair in by_patient.get(int(p), [])]
        ys = np.array([[a for _, a in pairs]], float)
        lesion_auc[b] = _auc_matrix(ys, np.array([[sc for sc, _ in pairs]]))[0] if pairs else np.nan
    return {"lesion_f1": f1, "lesion_auc": lesion_auc, "patient_auc": patient_auc}


def _delta(a: np.ndarray, b: np.ndarray) -> str:
    """a - b on the full sample (row 0) with the 95% interval of the bootstrap rows."""
    d = a - b
    lo, hi = np.nanpercentile(d[1:], [2.5, 97.5])
    return f"{d[0]:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def small_data_table(out: Path, sizes: list[int], seeds: list[int], n_boot: int = 500) -> str:
    results = {}
    for path in sorted((out / "runs").glob("*/result.json")):
        arm, size, seed = path.parent.name.rsplit("-", 2)
        results[(arm, int(size[1:]), int(seed[1:]))] = json.loads(path.read_text())
    if not results:
        return "no finished run\n"
    n = len(next(iter(results.values()))["patients"])
    idx = np.vstack([np.arange(n)[None], np.random.default_rng(0).integers(0, n, (n_boot, n))])
    scored = {k: _metrics(v, idx) for k, v in results.items()}
    names = ("lesion_f1", "lesion_auc", "patient_auc")
    lines = [
        f"Test: {n} phantom patients (2 mm, seed 0, strength 1). Mean over seeds {seeds} [95% patient-bootstrap CI, "
        f"{n_boot} resamples]; delta: minus `none` at the same size, paired.", "",
        "| n train | arm | seeds | enhancing lesion F1 | delta | lesion activity AUC | delta | patient AUC | delta |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    increments = [
        "",
        "Each arm against the arm before it (what adding that tool changed), paired:",
        "",
        "| n train | arm | delta F1 | delta lesion activity AUC | delta patient AUC |",
        "|---|---|---|---|---|",
    ]
    for size in sizes:
        base = previous = None
        for arm in ARMS:
            keys = [(arm, size, s) for s in seeds if (arm, size, s) in scored]
            if not keys:
                continue
            mean = {m: np.nanmean(np.stack([scored[k][m] for k in keys]), axis=0) for m in names}
            if arm == "none":
                base = mean
            cells = [str(size), arm, str(len(keys))]
            for m in names:
                lo, hi = np.nanpercentile(mean[m][1:], [2.5, 97.5])
                cells.append(f"{mean[m][0]:.3f} [{lo:.3f}, {hi:.3f}]")
                cells.append("" if base is None or arm == "none" else _delta(mean[m], base[m]))
            lines.append("| " + " | ".join(cells) + " |")
            if previous is not None and arm != "none":
                deltas = " | ".join(_delta(mean[m], previous[m]) for m in names)
                increments.append(f"| {size} | {arm} | {deltas} |")
            previous = mean
    lines += increments
    quality = [v["generator_quality"] for v in results.values() if "generator_quality" in v]
    if quality:
        acc = [q["discriminator_accuracy"] for q in quality]
        gap = [q["mean_gap_sd"] for q in quality]
        ratio = [q["nearest_rmse"]["train_over_heldout"] for q in quality]
        lines += ["", f"Generator quality over the {len(quality)} cGANs (validation patients' patches): discriminator "
                  f"accuracy {np.mean(acc):.3f} (range {min(acc):.3f}-{max(acc):.3f}; 0.5 = indistinguishable), "
                  f"largest class-mean gap {np.mean(gap):.2f} SD (range {min(gap):.2f}-{max(gap):.2f}), "
                  f"nearest-neighbour train/held-out ratio {np.mean(ratio):.3f} (about 1: no copying)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def small_data(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cohort, test = _cohorts(out, args.test)
    sizes, seeds = [int(s) for s in args.sizes.split(",")], [int(s) for s in args.seeds.split(",")]
    todo = [(out, cohort, test, arm, size, seed, args.steps) for size in sizes for seed in seeds for arm in ARMS]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for name in pool.map(_one_run, todo):
            print("done", name, flush=True)
    table = small_data_table(out, sizes, seeds)
    (out / "small_data.md").write_text(table)
    print(table)


# ---------------------------------------------------------------------------------------------------------
# sim to real


def sim_to_real_config(cohort: Path, steps: int) -> Any:
    """All-lesion head only, on phantoms alone (the config of both arms)."""
    from gdfree.data.sampling import SamplingRatios
    from gdfree.train import DatasetSpec, SplitConfig, TrainConfig

    return TrainConfig(
        datasets=(DatasetSpec(str(cohort), labels=("lesion",)),), heads=("lesion",), head_weights=(1.0,),
        sampling=SamplingRatios(active=0.0, chronic=0.6, background=0.4), max_steps=steps, val_every=500,
        split=SplitConfig(val_fraction=0.1, test_fraction=0.0, seed=0), seed=0,
    )  # fmt: skip


def _overlay(path: Path, flair: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zs = np.argsort(truth.sum(axis=(0, 1)))[::-1][:3]
    fig, axes = plt.subplots(len(zs), len(preds), figsize=(4 * len(preds), 4 * len(zs)), squeeze=False)
    vmax = np.percentile(flair[flair > 0], 99.5)
    for r, z in enumerate(sorted(zs)):
        for c, (name, pred) in enumerate(preds.items()):
            ax = axes[r, c]
            ax.imshow(flair[:, :, z].T, cmap="gray", origin="lower", vmin=0, vmax=vmax)
            ax.contour(truth[:, :, z].T, levels=[0.5], colors="lime", linewidths=0.8)
            ax.imshow(np.ma.masked_where(~pred[:, :, z].T, pred[:, :, z].T), cmap="autumn", alpha=0.6, origin="lower")
            ax.set_title(f"{name}, z={z}: predicted (red), consensus (green)", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _best_dice(prob: np.ndarray, truth: np.ndarray, brain: np.ndarray) -> list[float]:
    """[Dice, threshold] at the threshold (0.02 ... 0.98) that is best on this very case: optimistic, it
    tells whether the model ranks lesion voxels above the rest even where its threshold does not transfer."""
    p, t = prob[brain], truth[brain]
    best = [0.0, 0.5]
    for thr in np.arange(0.02, 0.99, 0.02):
        pred = p >= thr
        denom = pred.sum() + t.sum()
        dice = 2 * float((pred & t).sum()) / denom if denom else 0.0
        if dice > best[0]:
            best = [round(dice, 4), round(float(thr), 2)]
    return best


def sim_to_real(args: argparse.Namespace) -> None:
    from gdfree.data.cases import load_array_case
    from gdfree.evaluate.cohort import EvaluationConfig, evaluate_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover
    from gdfree.phantom.cohort import PhantomConfig, write_cohort
    from gdfree.phantom.randomise import DomainRandomisation
    from gdfree.preprocess.prepare import PrepareConfig, prepare_dataset
    from gdfree.train import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    phantoms = {
        "default": PhantomConfig(resolution_mm=2),
        "dr": PhantomConfig(resolution_mm=2, domain_randomisation=DomainRandomisation(enabled=True)),
        "drc": PhantomConfig(resolution_mm=2, domain_randomisation=DomainRandomisation(enabled=True,
                                                                                      confluent_probability=0.5)),
    }  # fmt: skip
    for name, cfg in phantoms.items():
        cohort = out / f"cohort-{name}"
        if not (cohort / "participants.tsv").is_file():
            write_cohort(cohort, cfg, args.subjects, seed=0, jobs=2, overwrite=True)
        if not (out / f"run-{name}" / "model.json").is_file() and not args.evaluate_only:
            train(sim_to_real_config(cohort, args.steps), out / f"run-{name}")
    real = out / "real2mm"
    found = [c for c in discover(Path(args.real)) if c.subject in ("patient07", "patient19")]
    prepare_dataset(found, real, PrepareConfig(spacing_mm=2.0, register=False), inputs=[args.real])
    rows, masks = [], {}
    cases = [load_array_case(c, ("T1w", "T2w", "FLAIR"), ("lesion",)) for c in discover(real)]
    for name in [n for n in phantoms if (out / f"run-{n}" / "model.json").is_file()]:
        model = TrainedModel.load(out / f"run-{name}")
        config = EvaluationConfig(threshold=model.thresholds["lesion"], n_boot=1)
        for case in cases:
            prob = model.probabilities(case.image)[model.heads.index("lesion")]
            mask = model.masks({"lesion": prob}, case.spacing_mm)["lesion"]
            result = evaluate_case(case.labels["lesion"], case.spacing_mm, case_id=case.case_id, pred=mask,
                                   prob=prob, brain=case.brain, config=config)  # fmt: skip
            r = result.row
            rows.append({"phantom": name, "case": case.case_id, "dice": r["dice"], "lesion_f1": r["lesion_f1"],
                         "fp_lesions": r["lesion_fp"], "ref_lesions": r["n_ref_lesions"],
                         "pred_lesions": r["n_pred_lesions"], "threshold": config.threshold,
                         "mean_prob_in_lesions": float(prob[case.labels["lesion"]].mean()),
                         "best_dice": _best_dice(prob, case.labels["lesion"], case.brain)})  # fmt: skip
            masks.setdefault(case.case_id, {})[name] = mask
    for case in cases:
        flair = case.image[2]
        _overlay(out / f"overlay_{case.case_id}.png", np.where(case.brain, flair - flair.min(), 0),
                 case.labels["lesion"], masks[case.case_id])  # fmt: skip
    (out / "sim_to_real.json").write_text(json.dumps(rows, indent=1))
    lines = ["| phantom | case | Dice | lesion F1 | FP lesions | predicted / reference lesions | mean p in lesions "
             "| Dice at the case's best threshold |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['phantom']} | {r['case']} | {r['dice']:.3f} | {r['lesion_f1']:.3f} | {r['fp_lesions']} | "
            f"{r['pred_lesions']} / {r['ref_lesions']} | {r['mean_prob_in_lesions']:.3f} | "
            f"{r['best_dice'][0]:.3f} (p >= {r['best_dice'][1]:.2f}) |"
        )
    (out / "sim_to_real.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------
# figures on the real shared cases


def figures(args: argparse.Namespace) -> None:
    """Insertion and removal on real patient07, and a cGAN trained on patient07 rendering patient19's label
    maps, written to ``--out`` (lesion_sim_real.png, generative_real.png, generative_real.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdfree.data.cases import load_array_case
    from gdfree.data.generative import case_label_map, collect_patches, generate, quality_report, train_generator
    from gdfree.data.lesion_sim import fit_lesion_model, insert_lesion, remove_lesion, sample_insertion, sample_removal
    from gdfree.io.adapters import discover

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = {c.subject: load_array_case(c, ("T1w", "T2w", "FLAIR"), ("lesion",)) for c in discover(Path(args.prepared))}
    case = cases["patient07"]
    rng = np.random.default_rng(0)
    model = fit_lesion_model(case.image, case.labels["lesion"], case.brain, case.spacing_mm)
    image, labels = case.image, {"lesion": case.labels["lesion"]}
    white_matter = case_label_map(case.image, case.brain, case.labels, 0) == 3  # as training places them
    placement = white_matter & ~ndimage.binary_dilation(labels["lesion"], iterations=3)
    changes: list[tuple[str, np.ndarray]] = []
    inserted = np.zeros(case.brain.shape, bool)
    for _ in range(3):
        params = sample_insertion(model, placement & ~inserted, case.spacing_mm, rng)
        image, labels, mask = insert_lesion(params, image, labels, case.spacing_mm, model.spread)
        inserted |= mask
        changes.append((f"inserted ({'active' if params['active'] else 'chronic'} contrast)", mask))
    for _ in range(2):
        params = sample_removal(labels["lesion"] & ~inserted, case.spacing_mm, rng)
        before = labels["lesion"]
        image, labels, filled = remove_lesion(params, image, {"lesion": before & ~inserted}, case.brain,
                                              case.spacing_mm)  # fmt: skip
        labels["lesion"] |= inserted
        changes.append(("removed", filled))
    half = 16
    fig, axes = plt.subplots(len(changes), 4, figsize=(11, 2.9 * len(changes)), squeeze=False)
    for r, (what, mask) in enumerate(changes):
        centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
        z = int(centre[2] + np.argmax([mask[:, :, k].sum() for k in range(centre[2] - 2, centre[2] + 3)]) - 2)
        sl = tuple(slice(max(c - half, 0), c + half) for c in centre[:2])
        for c, (title, img) in enumerate((("FLAIR before", case.image[2]), ("FLAIR after", image[2]),
                                          ("T1w after", image[0]), ("T2w after", image[1]))):  # fmt: skip
            ax = axes[r, c]
            ax.imshow(img[sl[0], sl[1], z].T, cmap="gray", origin="lower", vmin=-2.5, vmax=4)
            if c:
                ax.contour(mask[sl[0], sl[1], z].T, levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_title(f"{what}: {title} (z={z})", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "lesion_sim_real.png", dpi=80)
    plt.close(fig)
    if args.only_lesions:
        return

    maps = {k: case_label_map(c.image, c.brain, c.labels, 0) for k, c in cases.items()}
    train = collect_patches([cases["patient07"]], [maps["patient07"]], ("lesion",), 32, 96, rng)
    heldout = collect_patches([cases["patient19"]], [maps["patient19"]], ("lesion",), 32, 32, rng)
    report = {}
    fig, axes = plt.subplots(4, 6, figsize=(15, 10))
    for k, kind in enumerate(("cvae", "cgan")):
        generator, losses = train_generator(kind, train, steps=args.steps, seed=0)
        report[kind] = {"losses_first_last": [losses[0], losses[-1]], **quality_report(generator, train, heldout)}
        fake = generate(generator, heldout.label_maps[:3], seed=1)
        for i in range(3):
            for j, (name, img) in enumerate((("real", heldout.images[i]), (kind, fake[i]))):
                for m, mod in ((0, "T1w"), (2, "FLAIR")):
                    ax = axes[2 * k + (m // 2), 2 * i + j]
                    ax.imshow(img[m][:, :, 16].T, cmap="gray", origin="lower", vmin=-2.5, vmax=3)
                    ax.contour((heldout.label_maps[i][:, :, 16] >= 4).T, levels=[0.5], colors="red", linewidths=0.6)
                    ax.set_title(f"patient19 patch {i}: {name} {mod}", fontsize=7)
                    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "generative_real.png", dpi=80)
    plt.close(fig)
    (out / "generative_real.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: {q: v[q] for q in ("discriminator_accuracy", "mean_gap_sd", "nearest_rmse")}
                      for k, v in report.items()}, indent=1))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sd = sub.add_parser("small-data")
    sd.add_argument("--out", required=True)
    sd.add_argument("--sizes", default="4,8,16")
    sd.add_argument("--seeds", default="0,1,2")
    sd.add_argument("--test", type=int, default=50)
    sd.add_argument("--steps", type=int, default=400)
    sd.add_argument("--jobs", type=int, default=2)
    sr = sub.add_parser("sim-to-real")
    sr.add_argument("--out", required=True)
    sr.add_argument("--subjects", type=int, default=40)
    sr.add_argument("--steps", type=int, default=1500)
    sr.add_argument("--real", default=str(REAL))
    sr.add_argument("--evaluate-only", action="store_true", help="score the runs already there, train none")
    fg = sub.add_parser("figures")
    fg.add_argument("--out", required=True)
    fg.add_argument("--prepared", required=True, help="patient07 and patient19 after gdfree prepare --spacing 2")
    fg.add_argument("--steps", type=int, default=300)
    fg.add_argument("--only-lesions", action="store_true", help="lesion_sim_real.png only")
    args = parser.parse_args()
    {"small-data": small_data, "sim-to-real": sim_to_real, "figures": figures}[args.command](args)


if __name__ == "__main__":
    main()
