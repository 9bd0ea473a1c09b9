"""Find real lesions: leave one real patient out, phantoms + the other real patient, against a fitted FLAIR rule.

The two complete real exams of open_ms_data (patient07, patient19; Lesjak et al. 2017, CC-BY), prepared at
2 mm, take turns as the held-out test case. Every arm trains the default multitask network (enhancing +
all-lesion heads, 48^3 patches, seed 0) on the same 32 phantom training patients and validates on the same
8 phantom patients (the thresholds come from them); the real case enters with its lesion label only (its
enhancing head gets no gradient) and a share of the patches:

- ``phantom``: phantoms only (z-score normalisation); ``phantom-nawm``: the same with NAWM-referenced inputs;
- ``real``: + the other real patient (share 0.4 of the patches);
- ``real-nawm``: the same with NAWM-referenced inputs;
- ``real-sim``: ``real`` + lesion simulation (CarveMix, insertion, removal; probability 0.5 per patch);
- ``real-fade``: ``real`` + lesion-contrast scaling (``augmentation.lesion_contrast`` 0.5, factors 0.3-1): the
  phantom's lesions stand out more against its brain than real ones do;
- ``phantom-wm`` and ``real-wm``: ``phantom`` and ``real`` with every channel as a ratio to its white matter
  (``normalisation: wm-ratio-clip10``), the unit the phantom's contrasts were calibrated in;
- ``phantom-dr`` and ``real-dr``: ``phantom`` and ``real`` on a domain-randomised phantom cohort (per-subject
  contrasts, noise, bias, texture and blur; confluent periventricular lesions in 30% of subjects).
- ``phantom-rlc`` and ``phantom-rlc-wm``: ``phantom`` and ``phantom-wm`` on the same phantom patients with each
  lesion's contrasts drawn from the measured real lesions (``lesion_contrasts: real-lesions``): fainter lesions,
  many nearly iso-intense on T1w, as real ones are; ``phantom-mix-wm``: ``phantom-wm`` on both cohorts, half the
  patches from each.
- ``phantom-mix-drl-wm``: ``phantom-mix-wm`` with its second cohort domain-randomised as well (the ``*-dr``
  cohort's draws, confluent lesions included, with real lesions' contrasts): tissue contrasts that vary from
  subject to subject (a cortex as bright as some lesions, as on patient07) beside faint real-contrast lesions.

Baselines, scored by the same code on the same masks: the FLAIR rule (:mod:`gdfree.infer.flair_rule`) with
``k`` fitted on the fold's training real patient only, and the same rule at the issue's fixed ``k = 2.5``
(chosen by someone who had seen both patients: a reference, not a fair baseline). Metrics: lesion Dice, nDSC,
lesion F1 and false-positive lesions (msseg rule), voxels predicted / reference. Overlays: FLAIR with the
consensus (green) and each arm's lesion mask (red) on three axial slices per patient.

    gdfree prepare ../shared/data/open_ms_data/cross_sectional --out REAL --cases patient07,patient19 \\
        --no-register --spacing 2
    gdfree synth --out PHANTOM --subjects 40 --resolution 2 --seed 0
    gdfree synth --out PHANTOM_DR --subjects 40 --resolution 2 --seed 0 --config dr.yaml
    #   dr.yaml: {resolution_mm: 2, domain_randomisation: {enabled: true, confluent_probability: 0.3}}
    gdfree synth --out PHANTOM_RLC --subjects 40 --resolution 2 --seed 0 --config rlc.yaml
    #   rlc.yaml: {resolution_mm: 2, lesion_contrasts: real-lesions}
    gdfree synth --out PHANTOM_DRL --subjects 40 --resolution 2 --seed 0 --config drl.yaml
    #   drl.yaml: dr.yaml + {lesion_contrasts: real-lesions}; drl-band.yaml: drl.yaml with
    #   domain_randomisation.confluent_contrast: real-lesions (the band a measured lesion's contrasts)
    python benchmarks/real_lesions.py configs --phantom PHANTOM --phantom-dr PHANTOM_DR --phantom-rlc PHANTOM_RLC \
        --real REAL --out OUT
    python benchmarks/real_lesions.py train --out OUT --jobs 2                          # OUT/runs/*
    python benchmarks/real_lesions.py score --real REAL --phantom PHANTOM --out OUT [--figures docs/img]
    python benchmarks/real_lesions.py activity --real REAL --phantom2 PHANTOM2 --out OUT  # seed-1 phantoms
    python benchmarks/real_lesions.py contrast --real REAL --phantom PHANTOM --out OUT
    python benchmarks/real_lesions.py features --real REAL --phantom2 PHANTOM2 --out OUT
    python benchmarks/real_lesions.py curve --arm ARM --steps 2000 --real REAL --out OUT [--figures docs/img]
    python benchmarks/real_lesions.py configs ... --seeds 1,2 --channels-last     # ARM-s1, ARM-s2 as well
    python benchmarks/real_lesions.py filter --real REAL --phantom PHANTOM --out OUT \
        --only phantom-wm,phantom-wm+phantom-wm-s1+phantom-wm-s2 [--figures docs/img]   # A+B: their ensemble

``filter`` drops the predicted lesions that white matter does not surround (:mod:`gdfree.infer.tissue_filter`),
the fraction fitted on each network's validation phantoms + the other real patient, and gives the FLAIR rule the
same filter with its k and fraction fitted together.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

PATIENTS = ("patient07", "patient19")
REAL_SHARE = 0.4
ARMS = {  # arm -> (run name per held-out patient, or a shared run; normalisation; real share; lesion sim; fade;
    # phantom cohort: the default one, or the domain-randomised one)
    "phantom": ("phantom", "zscore-brain-clip5", None, 0.0, 0.0, "default"),
    "phantom-nawm": ("phantom-nawm", "nawm-mode-clip8", None, 0.0, 0.0, "default"),
    "phantom-dr": ("phantom-dr", "zscore-brain-clip5", None, 0.0, 0.0, "dr"),
    "real": ("real-{held}", "zscore-brain-clip5", REAL_SHARE, 0.0, 0.0, "default"),
    "real-nawm": ("real-nawm-{held}", "nawm-mode-clip8", REAL_SHARE, 0.0, 0.0, "default"),
    "real-sim": ("real-sim-{held}", "zscore-brain-clip5", REAL_SHARE, 0.5, 0.0, "default"),
    "real-fade": ("real-fade-{held}", "zscore-brain-clip5", REAL_SHARE, 0.0, 0.5, "default"),
    "real-dr": ("real-dr-{held}", "zscore-brain-clip5", REAL_SHARE, 0.0, 0.0, "dr"),
    "phantom-wm": ("phantom-wm", "wm-ratio-clip10", None, 0.0, 0.0, "default"),
    "real-wm": ("real-wm-{held}", "wm-ratio-clip10", REAL_SHARE, 0.0, 0.0, "default"),
    "phantom-rlc": ("phantom-rlc", "zscore-brain-clip5", None, 0.0, 0.0, "rlc"),
    "phantom-rlc-wm": ("phantom-rlc-wm", "wm-ratio-clip10", None, 0.0, 0.0, "rlc"),
    "phantom-mix-wm": ("phantom-mix-wm", "wm-ratio-clip10", None, 0.0, 0.0, "default+rlc"),
    "phantom-mix-drl-wm": ("phantom-mix-drl-wm", "wm-ratio-clip10", None, 0.0, 0.0, "default+drl"),
    # the recipe of the shipped network (``configs --shipped-cohort``), one real patient held out
    "ship": ("ship-{held}", "wm-ratio-clip10", 0.25, 0.0, 0.0, "shipped"),
    # the same, with the real patients' enhancing labels derived from their post-Gd T1w (``prepare``)
    "ship-enh": ("ship-enh-{held}", "wm-ratio-clip10", 0.25, 0.0, 0.0, "shipped"),
}
SHIP_STEPS = 1200


def write_ship_configs(cohort: Path, real: Path, out: Path) -> None:
    """OUT/cfg/ship.yaml, the recipe of the shipped network: the phantom network's training config and split of
    framings.py's ``cohort-1`` (``cohort``: the same 100 patients, bit for bit; its 20 test patients stay out), plus
    both real patients with their lesion label only in 25% of the patches, white-matter-ratio inputs,
    channels-last, 1,200 steps; and OUT/cfg/ship-patientNN.yaml, the same with that patient held out. ``ship-enh*``:
    the same with the real patients' derived enhancing labels too (each has at most one enhancing component), so
    that the enhancing head learns from real lesions that they mostly do not enhance."""
    from gdfree.demo import PRETRAINED

    model = json.loads((PRETRAINED / "network" / "model.json").read_text())
    if model["normalisation"] != "zscore-brain-clip5":
        raise SystemExit("the shipped network is no longer the phantom-only one whose split this recipe reuses")
    old = model["config"]["datasets"][0]["path"]

    def here(keys: list[str]) -> list[str]:
        return [f"{cohort}:{k.rsplit(':', 1)[1]}" for k in keys if k.startswith(f"{old}:")]

    cfg = dict(model["config"], normalisation="wm-ratio-clip10", channels_last=True, max_steps=SHIP_STEPS,
               val_every=200, datasets=[{"path": str(cohort), "format": "auto",
                                         "labels": ["enhancing", "lesion", "t1gd"]},
                                        {"path": str(real), "format": "auto", "labels": ["lesion"], "share": 0.25}])
    split = {"val_fraction": 0.2, "test_fraction": 0.0, "n_folds": 0, "fold": 0, "seed": 0, "train_subjects": [],
             "val_subjects": here(model["split"]["val"]), "test_subjects": here(model["split"]["test"])}
    (out / "cfg").mkdir(parents=True, exist_ok=True)
    for arm, labels in (("ship", ["lesion"]), ("ship-enh", ["lesion", "enhancing"])):
        datasets = [cfg["datasets"][0], dict(cfg["datasets"][1], labels=labels)]
        for held in ("", *PATIENTS):
            test = split["test_subjects"] + ([f"{real}:{held}"] if held else [])
            name = f"{arm}-{held}" if held else arm
            run_cfg = dict(cfg, datasets=datasets, split=dict(split, test_subjects=test))
            (out / "cfg" / f"{name}.yaml").write_text(json.dumps(run_cfg, indent=1))
            print(f"{name}: {out / 'cfg' / name}.yaml")


def arm_spec(arm: str) -> tuple[Any, ...]:
    """ARMS[arm]; ``ARM-sN`` is the same arm trained with seed N (its runs are named ``...-sN``)."""
    base, _, seed = arm.rpartition("-s")
    if arm not in ARMS and base in ARMS and seed.isdigit():
        pattern, *rest = ARMS[base]
        return (f"{pattern}-s{seed}", *rest)
    return ARMS[arm]


def _run_names() -> list[tuple[str, str]]:
    """(run name, held-out patient or '') of every training the arms need."""
    names = []
    for pattern, *_ in ARMS.values():
        if "{held}" in pattern:
            names += [(pattern.format(held=p), p) for p in PATIENTS]
        else:
            names.append((pattern, ""))
    return names


def write_configs(phantoms: dict[str, Path | None], real: Path, out: Path, steps: int,
                  seeds: tuple[int, ...] = (), channels_last: bool = False) -> None:  # fmt: skip
    """One training config per run (JSON, which YAML reads); ``phantoms``: cohort kind -> path (an arm whose
    cohort is None is left out). ``seeds``: also every arm as ``ARM-sN``, trained with seed N."""
    (out / "cfg").mkdir(parents=True, exist_ok=True)
    arms = [*ARMS, *(f"{a}-s{n}" for n in seeds for a in ARMS)]
    for arm in arms:
        pattern, norm, share, sim, fade, kind = arm_spec(arm)
        seed = int(arm.rpartition("-s")[2]) if arm not in ARMS else 0
        cohorts = [phantoms.get(k) for k in kind.split("+")]
        if any(c is None for c in cohorts):
            print(f"{arm}: no {kind} phantom cohort given; no config")
            continue
        val = [f"{c}:{i:03d}" for c in cohorts for i in range(33, 41)]
        each = None if len(cohorts) == 1 else round((1 - (share or 0)) / len(cohorts), 4)
        for held in PATIENTS if "{held}" in pattern else ("",):
            datasets: list[dict[str, Any]] = [{"path": str(c), "labels": ["enhancing", "lesion"]}
                                              | ({"share": each} if each else {}) for c in cohorts]  # fmt: skip
            if share:
                datasets.append({"path": str(real), "labels": ["lesion"], "share": share})
            cfg: dict[str, Any] = {
                "modalities": ["T1w", "T2w", "FLAIR"], "heads": ["enhancing", "lesion"], "max_steps": steps,
                "val_every": max(steps // 4, 1), "seed": seed, "keep": "last", "workers": 0, "datasets": datasets,
                "normalisation": norm, "split": {"val_subjects": val, "test_fraction": 0.0,
                                                 "test_subjects": [f"{real}:{held}"] if share else []},
            }  # fmt: skip
            if channels_last:
                cfg["channels_last"] = True
            if sim:
                cfg["lesion_sim"] = {"probability": sim}
            if fade:
                cfg["augmentation"] = {"lesion_contrast": fade, "lesion_contrast_min": 0.3}
            name = pattern.format(held=held)
            (out / "cfg" / f"{name}.yaml").write_text(json.dumps(cfg, indent=1))
            print(f"{arm}: {out / 'cfg' / name}.yaml")


def train_all(out: Path, jobs: int, only: list[str] | None = None, names: list[tuple[str, str]] | None = None) -> None:
    """Train every run not yet done: those named in ``only`` (any run with a config in OUT/cfg, ``ARM-sN``
    included), else those of ``names``, else every arm's; ``jobs`` at a time, one thread each; logs in OUT/logs."""
    (out / "logs").mkdir(parents=True, exist_ok=True)

    def one(name: str) -> None:
        run = out / "runs" / name
        if (run / "model.json").is_file() and (run / ".done").is_file():
            return
        if not (out / "cfg" / f"{name}.yaml").is_file():
            print(f"{name}: no config in {out / 'cfg'}; not trained")
            return
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with open(out / "logs" / f"{name}.log", "w") as log:
            command = [sys.executable, "-m", "gdfree", "train", str(out / "cfg" / f"{name}.yaml"), "--out", str(run)]
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
        if done.returncode == 0:
            (run / ".done").touch()
        print(f"{name}: exit {done.returncode}")

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, only or [n for n, _ in names or _run_names()]))


def _scores(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    from gdfree.metrics.lesions import DetectionRule, match_lesions
    from gdfree.metrics.voxel import dice, normalized_dice

    match = match_lesions(pred, ref, spacing, DetectionRule.preset("msseg"))
    return {"dice": dice(pred, ref), "ndsc": normalized_dice(pred, ref), "lesion_f1": float(match.f1),
            "fp_lesions": int(match.n_pred - match.tp_pred), "tp_lesions": match.tp_ref, "ref_lesions": match.n_ref,
            "pred_voxels": int(pred.sum()), "ref_voxels": int(ref.sum())}  # fmt: skip


def _real_cases(real: Path) -> dict[str, Any]:
    from gdfree.io.adapters import discover

    return {c.subject: c for c in discover(real)}


def _phantom_rule_cases(phantom: Path | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, Any]]:
    """(FLAIR, brain, lesion, spacing) of the 32 phantom training patients the networks share."""
    from gdfree.data.cases import load_array_case
    from gdfree.io.adapters import discover

    if phantom is None:
        return []
    out = []
    for c in sorted(discover(phantom), key=lambda c: c.subject)[:32]:
        case = load_array_case(c, ("FLAIR",), ("lesion",))
        out.append((_raw_flair(c), case.brain, case.labels["lesion"], case.spacing_mm))
    return out


def score(real: Path, out: Path, figures: Path | None, phantom: Path | None = None) -> dict[str, Any]:
    """Every arm and baseline on each held-out patient of ``real`` (the 2 mm dataset the networks trained on, or
    the same patients prepared at their acquired 1 mm: the networks then run at their 2 mm and come back by the
    nearest voxel, as ``gdfree predict`` does, and the rule and the scores work at 1 mm); writes
    OUT/real_lesions_<grid>.json and .md."""
    from gdfree.data.cases import load_array_case
    from gdfree.infer.flair_rule import fit_flair_k, flair_rule
    from gdfree.infer.model import TrainedModel
    from gdfree.metrics.voxel import dice

    files = _real_cases(real)
    raw = {p: load_array_case(files[p], ("T1w", "T2w", "FLAIR"), ("lesion",)) for p in PATIENTS}
    flair = {p: _raw_flair(files[p]) for p in PATIENTS}
    rows, masks = [], {p: {} for p in PATIENTS}
    phantom_cases = _phantom_rule_cases(phantom)
    grid = f"{raw[PATIENTS[0]].spacing_mm[0]:g}mm"
    for held in PATIENTS:
        other = next(p for p in PATIENTS if p != held)
        case = raw[held]
        ref = np.asarray(case.labels["lesion"], bool)
        train = raw[other]
        other_case = (flair[other], train.brain, train.labels["lesion"], train.spacing_mm)
        k, train_dice = fit_flair_k([other_case])
        rules = [("flair-rule (k fitted on the other patient)", k, f"k {k:g}, training Dice {train_dice:.3f}"),
                 ("flair-rule k=2.5 (fixed, seen both)", 2.5, "")]  # fmt: skip
        if phantom_cases:
            k_all, dice_all = fit_flair_k([*phantom_cases, other_case])
            rules.insert(1, ("flair-rule (k fitted on the phantoms + the other patient)", k_all,
                             f"k {k_all:g}, training Dice {dice_all:.3f}"))  # fmt: skip
        for arm, k_used, note in rules:
            mask = flair_rule(flair[held], case.brain, k_used, case.spacing_mm)
            masks[held][arm] = mask
            rows.append({"patient": held, "arm": arm, "k": k_used, "note": note,
                         **_scores(mask, ref, case.spacing_mm)})  # fmt: skip
        for arm, (pattern, *_rest) in ARMS.items():
            run = out / "runs" / pattern.format(held=held)
            if not (run / ".done").is_file():
                print(f"{arm} on {held}: {run} not trained; skipped")
                continue
            model = TrainedModel.load(run)
            mine = load_array_case(files[held], model.modalities, ("lesion",), normalisation=model.normalisation)
            prob, _ = model.predict(mine.image, brain=mine.brain, spacing_mm=mine.spacing_mm)
            lesion = np.where(mine.brain, prob[model.heads.index("lesion")], 0.0)
            mask = model.masks({"lesion": lesion}, mine.spacing_mm)["lesion"]
            masks[held][arm] = mask
            grid_t = (*np.arange(0.05, 0.96, 0.05), 0.97, 0.98, 0.99, model.thresholds["lesion"])
            best = max(((float(t), dice(lesion >= t, ref)) for t in grid_t), key=lambda pair: pair[1])
            rows.append({"patient": held, "arm": arm, "threshold": model.thresholds["lesion"],
                         "note": f"Dice {best[1]:.3f} at the case's own best threshold {best[0]:.3f} (optimistic)",
                         **_scores(mask, ref, mine.spacing_mm)})  # fmt: skip
        if figures is not None:
            _figure(flair[held], ref, masks[held], figures / f"real_lesions_{held}_{grid}.png", f"{held} ({grid})")
    from gdfree.demo import PRETRAINED

    activity = activity_plausibility(real, out, PRETRAINED / "network", PRETRAINED / "activity")
    result = {"rows": rows, "shipped_activity_on_real": activity, "command": " ".join(sys.argv)}
    print(json.dumps(activity, indent=1))
    (out / f"real_lesions_{grid}.json").write_text(json.dumps(result, indent=1))
    (out / f"real_lesions_{grid}.md").write_text(_markdown(rows))
    print(_markdown(rows))
    return result


def _white_matter(files: Any, brain: np.ndarray) -> np.ndarray:
    """White matter of a case, from its raw T1w (:func:`gdfree.data.cases.white_matter`)."""
    from gdfree.data.cases import white_matter
    from gdfree.io.bids import load_case

    t1 = np.asarray(load_case(files, modalities=["T1w"], required=["T1w"]).images["T1w"].data, np.float32)
    wm = white_matter(t1[None], brain, ("T1w",))
    if wm is None:
        raise ValueError(f"{files.case_id}: fewer than 100 white-matter voxels on its T1w")
    return wm


def _network_masks(runs: list[Path], files: list[Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(lesion mask of the network in ``runs[0]``, white matter, brain, reference lesion mask) of each case in
    ``files``; with more runs, of their ensemble as ``gdfree predict --ensemble`` makes it (the mean of the
    members' probabilities at the mean of their thresholds)."""
    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel

    model, *members = (TrainedModel.load(r) for r in runs)
    model = model.with_members(members)
    out = []
    for f in files:
        case = load_array_case(f, model.modalities, ("lesion",), normalisation=model.normalisation)
        if members:
            prob = model.sample(case.image, members=members, brain=case.brain, spacing_mm=case.spacing_mm).mean(0)
        else:
            prob, _ = model.predict(case.image, brain=case.brain, spacing_mm=case.spacing_mm)
        lesion = np.where(case.brain, prob[model.heads.index("lesion")], 0.0)
        mask = model.masks({"lesion": lesion}, case.spacing_mm)["lesion"]
        brain = np.asarray(case.brain, bool)
        out.append((mask, _white_matter(f, brain), brain, np.asarray(case.labels["lesion"], bool)))
    return out


def tissue_filter(
    real: Path, phantom: Path, out: Path, arms: list[str], figures: Path | None = None
) -> list[dict[str, Any]]:
    """Each arm (and the FLAIR rule fitted on the phantoms + the other patient) on each held-out patient, before
    and after dropping the predicted lesions that white matter does not surround
    (:mod:`gdfree.infer.tissue_filter`), with the white-matter fraction fitted on training cases only: the
    network's own validation phantoms (its split) + the other real patient, or for the rule the 32 phantom
    training patients + the other real patient; and the rule with its k and the fraction fitted together on those
    cases (the rule given the same filter). Writes OUT/tissue_filter_<grid>.json and .md, and with ``figures``
    each patient's overlays of the networks' masks before and after the filter."""
    from gdfree.data.cases import load_array_case
    from gdfree.infer.flair_rule import FLAIR_KS, fit_flair_k, flair_rule
    from gdfree.infer.tissue_filter import drop_outside_white_matter, fit_min_white_matter
    from gdfree.io.adapters import discover

    files = _real_cases(real)
    cohorts: dict[str, dict[str, Any]] = {}  # validation phantoms of each run, by cohort folder and subject
    rule_phantoms = sorted(discover(phantom), key=lambda c: c.subject)[:32]
    rows = []
    for held in PATIENTS:
        other = next(p for p in PATIENTS if p != held)
        case = load_array_case(files[held], ("FLAIR",), ("lesion",))
        ref, brain = np.asarray(case.labels["lesion"], bool), np.asarray(case.brain, bool)
        wm, flair = _white_matter(files[held], brain), _raw_flair(files[held])
        fitted: dict[str, tuple[np.ndarray, list[Any]]] = {}
        rule_cases = [*_phantom_rule_cases(phantom), (_raw_flair(files[other]), *_case_parts(files[other]))]
        rule_wm = [_white_matter(f, b) for f, (_, b, _, _) in zip([*rule_phantoms, files[other]], rule_cases,
                                                                           strict=True)]  # fmt: skip

        def rule_train(k_used: float, cases: list[Any] = rule_cases, wms: list[Any] = rule_wm) -> list[Any]:
            return [(flair_rule(fl, b, k_used, sp), w, b, les) for (fl, b, les, sp), w in zip(cases, wms, strict=True)]

        k, _ = fit_flair_k(rule_cases)
        fitted[f"flair-rule (k {k:g}, fitted on the phantoms + {other})"] = (
            flair_rule(flair, brain, k, case.spacing_mm), rule_train(k))  # fmt: skip
        joint = max(((kk, *fit_min_white_matter(rule_train(kk))) for kk in FLAIR_KS if kk >= 1.5),
                    key=lambda t: t[2])  # fmt: skip
        rows.append({"patient": held, "arm": f"flair-rule + white-matter filter, k and fraction fitted together "
                     f"(k {joint[0]:g}, fraction {joint[1]:g})", "k": joint[0], "fraction": joint[1],
                     "note": f"fitted on {len(rule_cases)} cases (mean Dice {joint[2]:.3f})",
                     **_scores(drop_outside_white_matter(flair_rule(flair, brain, joint[0], case.spacing_mm), wm,
                                                         brain, joint[1]), ref, case.spacing_mm)})  # fmt: skip
        for arm in arms:  # ARM, or ARM+ARM+...: their ensemble
            runs = [out / "runs" / arm_spec(a)[0].format(held=held) for a in arm.split("+")]
            run = runs[0]
            val = []
            for key in json.loads((run / "split.json").read_text())["val_patients"]:
                cohort, subject = key.rsplit(":", 1)
                val.append(cohorts.setdefault(cohort, {c.subject: c for c in discover(cohort)})[subject])
            mine, *train = _network_masks(runs, [files[held], *val, files[other]])
            fitted[arm] = (mine[0], train)
        shown = {}
        for arm, (mask, train) in fitted.items():
            fraction, train_dice = fit_min_white_matter(train)
            filtered = drop_outside_white_matter(mask, wm, brain, fraction)
            if not arm.startswith("flair-rule"):
                label = arm if "+" not in arm else f"{arm.split('+')[0]}, ensemble of {arm.count('+') + 1}"
                shown.update({label: mask, f"{label} + filter ({fraction:g})": filtered})
            for name, used in ((arm, mask), (f"{arm} + white-matter filter ({fraction:g})", filtered)):
                rows.append({"patient": held, "arm": name, "fraction": fraction, "training_cases": len(train),
                             "note": f"fraction {fraction:g} fitted on {len(train)} cases (mean Dice {train_dice:.3f})",
                             **_scores(used, ref, case.spacing_mm)})  # fmt: skip
        if figures is not None:
            grid = f"{case.spacing_mm[0]:g}mm"
            _figure(flair, ref, shown, figures / f"real_lesions_filter_{held}_{grid}.png", f"{held} ({grid})")
    grid = f"{case.spacing_mm[0]:g}mm"
    (out / f"tissue_filter_{grid}.json").write_text(json.dumps({"rows": rows, "command": " ".join(sys.argv)},
                                                               indent=1))  # fmt: skip
    (out / f"tissue_filter_{grid}.md").write_text(_markdown(rows))
    print(_markdown(rows))
    return rows


def _case_parts(files: Any) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(brain, lesion mask, voxel size) of a case, as the FLAIR rule's fit takes them after the FLAIR."""
    from gdfree.data.cases import load_array_case

    case = load_array_case(files, ("FLAIR",), ("lesion",))
    return case.brain, case.labels["lesion"], case.spacing_mm


def activity_plausibility(real: Path, out: Path, network: Path, classifier: Path, *,
                          allow_training_cases: bool = False) -> list[dict[str, Any]]:
    """How many of each real patient's visible lesions ``classifier`` (with ``network``'s maps) calls active:
    each patient has at most one derived enhancing component, so a plausible classifier calls few.
    ``allow_training_cases``: score patients the network trained on (its maps on them are in-sample; the
    classifier's calls are still its own)."""
    import csv
    import shutil

    from gdfree.predict import predict_dataset

    where = out / f"activity-{network.parent.name}-{network.name}"
    shutil.rmtree(where, ignore_errors=True)
    predict_dataset(network, real, where, activity=classifier, allow_training_cases=allow_training_cases)
    rows = []
    for path in sorted(where.rglob("*desc-all_lesions.tsv")):
        with open(path, newline="") as fh:
            lesions = list(csv.DictReader(fh, delimiter="\t"))
        called = [r for r in lesions if r.get("predicted_active", "").lower() in ("true", "1")]
        top = max((float(r["p_active"]) for r in lesions if r.get("p_active") not in (None, "", "n/a")), default=0.0)
        rows.append({"case": path.name.split("_")[0], "visible_lesions": len(lesions), "called_active": len(called),
                     "fraction": len(called) / len(lesions) if lesions else 0.0, "max_p_active": top})  # fmt: skip
    return rows


def activity_refit(real: Path, phantom2: Path, out: Path, networks: dict[str, str]) -> list[dict[str, Any]]:
    """The lesion-level activity classifier refitted with each network's maps (``name -> run``; None: the shipped
    network) on 24 fresh phantom patients (seed-1 cohort; 8 more validate, 8 more test), with and without the
    training real patient's lesions (all but its derived enhancing component inactive), each network's input
    normalisation: its phantom test lesion AUC and how many of the held-out real patient's visible lesions it
    calls active. Returns one row per (network, held-out patient, with/without real)."""
    from gdfree.activity.classifier import case_lesions, fit_activity
    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover
    from gdfree.metrics.patient import roc_auc

    phantoms = sorted(discover(phantom2), key=lambda c: c.subject)
    files = _real_cases(real)
    heads = ("lesion", "enhancing")
    rows = []
    for name, run in networks.items():
        held_runs = {p: Path(run.format(held=p)) for p in PATIENTS}
        for held in PATIENTS:
            model = TrainedModel.load(held_runs[held])
            norm = model.normalisation
            cases = [load_array_case(c, model.modalities, heads, normalisation=norm) for c in phantoms]
            train_p, val_p, test_p = cases[:24], cases[24:32], cases[32:]
            other = next(p for p in PATIENTS if p != held)
            real_other = load_array_case(files[other], model.modalities, heads, normalisation=norm)
            real_held = load_array_case(files[held], model.modalities, heads, normalisation=norm)
            for with_real in (False, True):
                clf = fit_activity([*train_p, *([real_other] if with_real else [])], val_p, model.modalities,
                                   network=model)  # fmt: skip
                ys, ps = [], []
                for c in test_p:
                    items = case_lesions(c, np.asarray(c.labels["lesion"]), model)
                    if items.n and items.active is not None:
                        ys.append(items.active)
                        ps.append(clf.p_active(items.features))
                auc = roc_auc(np.concatenate(ys), np.concatenate(ps))
                mine = case_lesions(real_held, np.asarray(real_held.labels["lesion"]), model)
                p = clf.p_active(mine.features)
                rows.append({"network": name, "held_out": held, "with_real": with_real, "phantom_test_auc": auc,
                             "visible_lesions": mine.n, "called_active": int((p >= clf.threshold).sum()),
                             "derived_active": int(mine.active.sum()) if mine.active is not None else None,
                             "max_p_active": float(p.max()) if p.size else 0.0})  # fmt: skip
                print(rows[-1])
    return rows


def contrast(real: Path, phantom: Path, out: Path) -> list[dict[str, Any]]:
    """How far lesions stand out as the network sees them: per case (the real patients and the first three
    phantoms) and normalisation, the median normalised value of each channel inside the lesion mask and in white
    matter (the brightest third of non-lesion brain on T1w)."""
    from gdfree.data.cases import NORMALISATIONS, load_array_case
    from gdfree.io.adapters import discover

    cases = [*sorted(discover(real), key=lambda c: c.subject),
             *sorted(discover(phantom), key=lambda c: c.subject)[:3]]  # fmt: skip
    rows = []
    for norm in NORMALISATIONS:
        for c in cases:
            a = load_array_case(c, ("T1w", "T2w", "FLAIR"), ("lesion",), normalisation=norm)
            lesion = np.asarray(a.labels["lesion"], bool)
            rest = a.brain & ~lesion
            wm = rest & (a.image[0] > np.percentile(a.image[0][rest], 66))
            row: dict[str, Any] = {"normalisation": norm, "case": c.case_id}
            for ch, name in enumerate(("T1w", "T2w", "FLAIR")):
                row[f"{name}_wm"] = float(np.median(a.image[ch][wm]))
                row[f"{name}_lesion"] = float(np.median(a.image[ch][lesion]))
            rows.append(row)
            print(row)
    (out / "contrast.json").write_text(json.dumps(rows, indent=1))
    return rows


def feature_ranges(real: Path, phantom2: Path, out: Path, top: int = 20) -> list[dict[str, Any]]:
    """Where the real patients' lesions fall among phantom lesions, feature by feature, for the shipped activity
    classifier (its shipped network's maps): each of its ``top`` features by split gain, the phantom lesions'
    5th-95th percentile (12 seed-1 phantom patients), the real lesions' median and the fraction of real lesions
    outside that range."""
    from gdfree.activity import ActivityClassifier
    from gdfree.activity.classifier import case_lesions
    from gdfree.data.cases import load_array_case
    from gdfree.demo import PRETRAINED
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover

    clf = ActivityClassifier.load(PRETRAINED / "activity")
    model = TrainedModel.load(PRETRAINED / "network")

    def features(cases: list[Any]) -> np.ndarray:
        rows = []
        for c in cases:
            case = load_array_case(c, model.modalities, ("lesion", "enhancing"), normalisation=model.normalisation)
            rows.append(case_lesions(case, np.asarray(case.labels["lesion"]), model).features)
        return np.concatenate(rows)

    real_f = features(discover(real))
    phantom_f = features(sorted(discover(phantom2), key=lambda c: c.subject)[:12])
    lo, hi = np.percentile(phantom_f, 5, axis=0), np.percentile(phantom_f, 95, axis=0)
    outside = ((real_f < lo) | (real_f > hi)).mean(axis=0)
    gain = clf.booster.feature_importance("gain")
    rows = [{"feature": clf.features[i], "gain_rank": rank + 1, "phantom_p5": float(lo[i]), "phantom_p95": float(hi[i]),
             "real_median": float(np.median(real_f[:, i])), "real_outside": float(outside[i])}
            for rank, i in enumerate(np.argsort(-gain)[:top])]  # fmt: skip
    (out / "feature_ranges.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(r)
    return rows


def _raw_flair(files: Any) -> np.ndarray:
    from gdfree.io.bids import load_case

    return np.asarray(load_case(files, modalities=["FLAIR"], required=["FLAIR"]).images["FLAIR"].data, np.float32)


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| held-out patient | arm | lesion Dice | nDSC | lesion F1 | FP lesions | found / reference lesions | "
             "predicted / reference voxels | note |", "|" + " --- |" * 9]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['patient']} | {r['arm']} | {r['dice']:.3f} | {r['ndsc']:.3f} | {r['lesion_f1']:.3f} | "
                     f"{r['fp_lesions']} | {r['tp_lesions']} / {r['ref_lesions']} | {r['pred_voxels']:,} / "
                     f"{r['ref_voxels']:,} | {r.get('note', '')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def curve(arm: str, steps: int, real: Path, out: Path, figures: Path | None) -> list[dict[str, Any]]:
    """A learning curve of a phantom-only ``arm``: trains it again for ``steps`` steps with a snapshot at each
    validation (every 250 steps; run ``curve-<arm>-<steps>``), then scores every snapshot on both real patients
    at its own (phantom-validated) threshold; the phantom validation score and the wall time come from the
    run's log. Writes OUT/curve-<arm>-<steps>.json (and a plot in ``figures``)."""
    import csv

    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel

    pattern = ARMS[arm][0]
    if "{held}" in pattern:
        raise SystemExit(f"curve: {arm} holds a real patient out; give a phantom-only arm")
    name = f"curve-{arm}-{steps}"
    cfg = json.loads((out / "cfg" / f"{pattern}.yaml").read_text())
    (out / "cfg" / f"{name}.yaml").write_text(json.dumps({**cfg, "max_steps": steps, "val_every": 250,
                                                          "snapshots": True}, indent=1))  # fmt: skip
    train_all(out, 1, [name], names=[(name, "")])
    run = out / "runs" / name
    with open(run / "log.tsv", newline="") as fh:
        logged = {int(float(r["step"])): r for r in csv.DictReader(fh, delimiter="\t") if r.get("val_score") not in
                  (None, "", "n/a")}  # fmt: skip
    files = _real_cases(real)
    rows = []
    for snap in sorted(run.glob("step-*.json")):
        step = int(snap.stem.split("-")[1])
        model = TrainedModel.load(run, stem=snap.stem)
        row: dict[str, Any] = {"step": step, "seconds": float(logged[step]["seconds"]),
                               "phantom_val_score": float(logged[step]["val_score"]),
                               "phantom_val_lesion_f1": float(logged[step]["val_lesion_f1"]),
                               "lesion_threshold": model.thresholds["lesion"]}  # fmt: skip
        for patient in PATIENTS:
            case = load_array_case(files[patient], model.modalities, ("lesion",), normalisation=model.normalisation)
            prob, _ = model.predict(case.image, brain=case.brain, spacing_mm=case.spacing_mm)
            lesion = np.where(case.brain, prob[model.heads.index("lesion")], 0.0)
            mask = model.masks({"lesion": lesion}, case.spacing_mm)["lesion"]
            row[f"{patient}_dice"] = _scores(mask, np.asarray(case.labels["lesion"], bool), case.spacing_mm)["dice"]
        rows.append(row)
        print(row)
    (out / f"{name}.json").write_text(json.dumps({"rows": rows, "command": " ".join(sys.argv)}, indent=1))
    if figures is not None and rows:
        _curve_figure(rows, figures / f"real_lesions_{name}.png", f"{arm}: learning curve ({steps} steps)")
    return rows


def _curve_figure(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["phantom_val_lesion_f1"] for r in rows], "k-o", ms=3, label="phantom validation lesion F1")
    for patient, colour in zip(PATIENTS, ("tab:red", "tab:blue"), strict=True):
        ax.plot(steps, [r[f"{patient}_dice"] for r in rows], "-o", color=colour, ms=3, label=f"{patient} lesion Dice")
    top = ax.secondary_xaxis("top", functions=(lambda s: s * rows[-1]["seconds"] / rows[-1]["step"] / 60,
                                               lambda m: m * 60 * rows[-1]["step"] / rows[-1]["seconds"]))  # fmt: skip
    top.set_xlabel("wall time (min, as logged by the run)", fontsize=7)
    ax.set_xlabel("training steps (4 patches of 48^3)", fontsize=7)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figure(flair: np.ndarray, ref: np.ndarray, masks: dict[str, np.ndarray], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdfree.arrays import window_range

    per_slice = ref.sum(axis=(0, 1))
    order = np.argsort(per_slice)[::-1]
    slices = sorted({int(order[0]), int(order[len(order) // 20]), int(order[len(order) // 8])})
    lo, hi = window_range(flair, flair != 0)
    fig, axes = plt.subplots(len(slices), len(masks), figsize=(2.2 * len(masks), 2.4 * len(slices)), squeeze=False)
    for row, z in enumerate(slices):
        for col, (name, mask) in enumerate(masks.items()):
            ax = axes[row][col]
            ax.imshow(np.rot90(flair[:, :, z]), cmap="gray", vmin=lo, vmax=hi)
            ax.contour(np.rot90(ref[:, :, z]), levels=[0.5], colors="lime", linewidths=0.6)
            ax.contour(np.rot90(mask[:, :, z]), levels=[0.5], colors="red", linewidths=0.6)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name.replace(" (", "\n("), fontsize=6)
    fig.suptitle(f"{title}: consensus green, prediction red (FLAIR)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("configs", "train", "score", "activity", "contrast", "features", "curve",
                                         "filter"))
    parser.add_argument("--arm", default="phantom", help="curve: the phantom-only arm to train again")
    parser.add_argument("--phantom2", type=Path, help="a second phantom cohort (activity: 40 patients, seed 1)")
    parser.add_argument("--phantom", type=Path)
    parser.add_argument("--phantom-dr", type=Path, help="a domain-randomised phantom cohort (the *-dr arms)")
    parser.add_argument("--phantom-rlc", type=Path, help="a real-lesion-contrast phantom cohort (the *-rlc arms)")
    parser.add_argument("--phantom-drl", type=Path, help="a domain-randomised real-lesion-contrast cohort (*-drl)")
    parser.add_argument("--real", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", default="", help="configs: also every arm with these seeds (ARM-sN; e.g. 1,2)")
    parser.add_argument("--channels-last", action="store_true", help="configs: train with channels_last: true")
    parser.add_argument("--shipped-cohort", type=Path,
                        help="configs: framings.py's cohort-1; write only the shipped recipe's configs (ship*)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="", help="train: these runs only; filter: these arms (comma-separated)")
    parser.add_argument("--figures", type=Path, default=None)
    args = parser.parse_args()
    if args.what == "configs" and args.shipped_cohort:
        write_ship_configs(args.shipped_cohort.resolve(), args.real.resolve(), args.out)
    elif args.what == "configs":
        cohorts = {"default": args.phantom.resolve(), "dr": args.phantom_dr.resolve() if args.phantom_dr else None,
                   "rlc": args.phantom_rlc.resolve() if args.phantom_rlc else None,
                   "drl": args.phantom_drl.resolve() if args.phantom_drl else None}
        write_configs(cohorts, args.real.resolve(), args.out, args.steps,
                      tuple(int(n) for n in args.seeds.split(",") if n), args.channels_last)  # fmt: skip
    elif args.what == "train":
        train_all(args.out, args.jobs, [n for n in args.only.split(",") if n])
    elif args.what == "features":
        feature_ranges(args.real.resolve(), args.phantom2.resolve(), args.out)
    elif args.what == "curve":
        curve(args.arm, args.steps, args.real.resolve(), args.out, args.figures)
    elif args.what == "contrast":
        contrast(args.real.resolve(), args.phantom.resolve(), args.out)
    elif args.what == "filter":
        tissue_filter(args.real.resolve(), args.phantom.resolve(), args.out, [a for a in args.only.split(",") if a],
                      args.figures)  # fmt: skip
    elif args.what == "score":
        score(args.real.resolve(), args.out, args.figures, args.phantom.resolve() if args.phantom else None)
    else:
        from gdfree.demo import PRETRAINED

        networks = {"shipped (phantom-only)": str(PRETRAINED / "network")}
        for arm in ("real", "real-nawm"):
            networks[arm] = str(args.out / "runs" / ARMS[arm][0])
        rows = activity_refit(args.real.resolve(), args.phantom2.resolve(), args.out, networks)
        (args.out / "activity_refit.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
