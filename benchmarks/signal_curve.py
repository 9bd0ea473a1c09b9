"""How much of Gd enhancement can a pre-contrast model learn, as a function of the phantom's signature?

Synthesises one 2 mm cohort per signature strength with the same seed (same anatomy, lesions and activity;
only the pre-contrast signature of active lesions differs), trains the multitask network on each with the
same config, split and step budget, and tests every model on the same held-out patients. The oracle
(inputs + post-Gd T1w, ``oracle: true``) is trained on the default-strength cohort as the ceiling.
Prints one table: pooled lesion F1 (msseg rule), FROC sensitivity at 1 FP/scan, patient AUC with its
bootstrap 95% CI; writes it to ``--out``/signal_curve.md and .json.

    python benchmarks/signal_curve.py --out /tmp/signal [--subjects 50] [--steps 600] [--seed 0]

A model whose ``row.json`` exists in ``--out`` for the same subjects, steps and seed is not retrained, so a run
can be extended (``--strengths 1`` first, then the rest) or continued after an interruption; its test patients
are predicted and scored again when ``--flips`` differs from its row or with ``--reevaluate``. ``--only MODEL``
(``oracle`` or a strength) trains just that model and prints no table: start one process per model (with
``OMP_NUM_THREADS`` shared out), then run with ``--collect`` (never trains; a model without a run is left out)
to print the table.

``--init BASE`` fine-tunes instead of training from scratch: every model starts from the weights of the same
model in BASE (``BASE/model-1/run``, ``BASE/oracle/run``...; same cohorts and split, so link BASE's
``cohort-*`` folders into ``--out``), with ``--lr`` and ``--sampling-unit`` (``voxel`` or ``lesion``, see
:mod:`gdfree.data.sampling`) if given.

``--heldout N`` synthesises N more patients per strength (sub-<subjects + 1> onwards, in no split of any
model) and adds them to every model's test set, for narrower CIs without retraining.

Below the table: the pre-contrast model at the default strength over the oracle, lesion F1 ratio with a paired
patient-bootstrap 95% CI (both models resampled on the same test patients), against the 80% asked for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from gdfree.demo import demo_config, evaluate_run, train_and_evaluate
from gdfree.io.tables import write_json
from gdfree.metrics.lesions import bootstrap_pooled_f1
from gdfree.metrics.patient import percentile_ci
from gdfree.phantom.cohort import PhantomConfig, write_cohort


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


N_BOOT = 2000
"""Bootstrap resamples of every CI (the evaluation's default)."""
CRITERION = 0.8
"""The share of the oracle's lesion F1 that the pre-contrast model at the default strength should reach."""


def _ratio_line(rows: list[dict], default: float) -> str:
    """The default-strength model's lesion F1 over the oracle's, with a paired patient-bootstrap CI."""
    model = next((r for r in rows if r["model"] == f"strength {default:g}"), None)
    oracle = next((r for r in rows if r["model"].startswith("oracle")), None)
    if model is None or oracle is None or "lesion_counts" not in model or "lesion_counts" not in oracle:
        return ""
    if not oracle["lesion_f1"]:
        return "\n\nThe oracle's lesion F1 is 0: no ratio to it."
    boot = bootstrap_pooled_f1([model["lesion_counts"], oracle["lesion_counts"]], "msseg", n_boot=N_BOOT, seed=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(boot[:, 1] > 0, boot[:, 0] / boot[:, 1], np.nan)
    low, high, _ = percentile_ci(ratios)
    ratio = model["lesion_f1"] / oracle["lesion_f1"]
    verdict = "met" if ratio >= CRITERION else "not met"
    where = "below it" if high < CRITERION else "above it" if low >= CRITERION else f"around it (holds {CRITERION})"
    return (f"\n\nStrength {default:g} over the oracle, lesion F1: **{ratio:.2f}** [{low:.2f}, {high:.2f}] (paired "
            f"patient bootstrap, same resamples for both models); {CRITERION:.0%} asked for: {verdict}; "
            f"the CI lies {where}.")  # fmt: skip


def _volume_table(rows: list[dict]) -> str:
    """Detected / reference lesions and false positives per lesion volume bin, one column per model."""
    rows = [r for r in rows if "by_volume" in r]
    if not rows:
        return ""
    lines = ["", "Detected / reference active lesions (sensitivity), false-positive lesions, by volume:", "",
             "| volume (mm3) | reference lesions | " + " | ".join(r["model"] for r in rows) + " |",
             "| --- | --- | " + " | ".join("---" for _ in rows) + " |"]  # fmt: skip
    for i, b in enumerate(rows[0]["by_volume"]):
        cells = [f"{r['by_volume'][i]['lesion_tp_ref']} ({_fmt(r['by_volume'][i]['lesion_sensitivity'])}), "
                 f"{r['by_volume'][i]['lesion_fp']} FP" for r in rows]  # fmt: skip
        lines.append(f"| {b['volume_bin']} | {b['n_ref_lesions']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--test-fraction", type=float, default=0.4)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--strengths", default="0,0.25,0.5,1.0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--time-budget", type=float, default=0.0, help="stop each training after so many s")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader processes per training run")
    parser.add_argument("--only", default=None, help="train just this model: 'oracle' or one of the strengths")
    parser.add_argument("--flips", action="store_true", help="test-time augmentation: mean of the 8 mirrorings")
    parser.add_argument("--reevaluate", action="store_true", help="predict and score trained models again")
    parser.add_argument("--collect", action="store_true", help="never train: tabulate the rows already there")
    parser.add_argument("--heldout", type=int, default=0, help="also test on N patients in no split")
    parser.add_argument("--init", type=Path, default=None, help="fine-tune each model from BASE/<model>/run")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the demo's)")
    parser.add_argument("--sampling-unit", choices=("voxel", "lesion"), default=None, help="patch centres by")
    args = parser.parse_args()
    console = Console()
    default = PhantomConfig().signature_strength
    strengths = [float(s) for s in args.strengths.split(",")]
    runs = [(f"strength {s:g}", s, False) for s in strengths]
    runs.append((f"oracle (strength {default:g}, +T1gd)", default, True))
    if args.only is not None:
        runs = [r for r in runs if (r[2] if args.only == "oracle" else not r[2] and r[1] == float(args.only))]
        if not runs:
            parser.error(f"--only {args.only}: expected 'oracle' or one of --strengths")
    rows, participants = [], {}
    for name, strength, oracle in runs:
        cohort = args.out / f"cohort-{strength:g}"
        table = cohort / "participants.tsv"
        if args.collect and not table.is_file():
            console.print(f"{name}: no cohort {cohort}; left out (--collect)")
            continue
        if not table.is_file() or len(table.read_text().strip().splitlines()) - 1 != args.subjects:
            cfg_p = PhantomConfig(resolution_mm=2, signature_strength=strength)
            write_cohort(cohort, cfg_p, args.subjects, args.seed, jobs=args.jobs, overwrite=True)
        participants[strength] = (cohort / "participants.tsv").read_text()
        heldout = None
        if args.heldout:
            heldout = args.out / f"cohort-{strength:g}-heldout"
            table = heldout / "participants.tsv"
            if not table.is_file() or len(table.read_text().strip().splitlines()) - 1 != args.heldout:
                if args.collect:
                    console.print(f"{name}: no held-out cohort {heldout}; left out (--collect)")
                    continue
                cfg_p = PhantomConfig(resolution_mm=2, signature_strength=strength)
                write_cohort(heldout, cfg_p, args.heldout, args.seed, jobs=args.jobs, overwrite=True,
                             first=args.subjects)  # fmt: skip
            participants[strength] += (heldout / "participants.tsv").read_text()
        cfg = demo_config(cohort, args.steps, args.seed)
        cfg = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, test_fraction=args.test_fraction),
                                  workers=args.workers, time_budget_s=args.time_budget)  # fmt: skip
        if oracle:
            cfg = dataclasses.replace(cfg, modalities=(*cfg.modalities, "T1gd"), oracle=True)
        work = args.out / ("oracle" if oracle else f"model-{strength:g}")
        train_key = {"subjects": args.subjects, "steps": args.steps, "seed": args.seed,
                     "test_fraction": args.test_fraction}  # fmt: skip
        tuning = {"init": str(args.init / work.name / "run") if args.init else None, "lr": args.lr,
                  "sampling_unit": args.sampling_unit}  # fmt: skip
        tuning = {k: v for k, v in tuning.items() if v is not None}  # rows from before these options stay valid
        train_key.update(tuning)
        if "init" in tuning:
            cfg = dataclasses.replace(cfg, init=tuning["init"])
        if "lr" in tuning:
            cfg = dataclasses.replace(cfg, lr=tuning["lr"])
        if "sampling_unit" in tuning:
            cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, unit=tuning["sampling_unit"]))
        key = {**train_key, "flips": args.flips, "heldout": args.heldout}
        saved = json.loads((work / "row.json").read_text()) if (work / "row.json").is_file() else None
        if saved and saved["key"] == key and "lesion_counts" in saved["row"] and not args.reevaluate:
            rows.append(saved["row"])
            console.print(f"{name}: reusing {work / 'row.json'}")
            continue
        trained = saved and {k: saved["key"].get(k) for k in train_key} == train_key
        if args.collect and not (trained and (work / "run" / "model.json").is_file()):
            console.print(f"{name}: no trained run in {work} for {train_key}; left out (--collect)")
            continue
        start = time.perf_counter()
        if trained and (work / "run" / "model.json").is_file():
            for folder in ("predictions", "predictions-heldout"):
                if (work / folder).exists():
                    shutil.rmtree(work / folder)
            results, evaluation, _, timings = evaluate_run(work, cohort, device=args.device, flips=args.flips,
                                                           heldout=heldout)  # fmt: skip
            steps, train_s = saved["row"]["steps"], saved["row"]["train_s"]
        else:
            if work.exists():
                shutil.rmtree(work)
            summary, results, evaluation, _, timings = train_and_evaluate(
                cfg, work, cohort, device=args.device, flips=args.flips, heldout=heldout
            )
            steps, train_s = summary["steps"], round(timings["training_s"])
            if "init" in tuning:  # steps of the base model + fine-tuning steps
                steps = f"{json.loads((Path(tuning['init']) / 'model.json').read_text())['step']}+{steps}"
        pooled, patient = evaluation["pooled_lesions"], evaluation.get("patient", {})
        row = {
            "model": name,
            "test_patients": len(results),
            "active_test_patients": patient.get("n_active"),
            "lesion_f1": pooled["lesion_f1"],
            "lesion_f1_ci": pooled["lesion_f1_ci"],
            "lesion_sensitivity": pooled["lesion_sensitivity"],
            "fp_per_scan": pooled["fp_per_scan"],
            "sensitivity_at_1fp": evaluation["froc"]["sensitivity_at_fp"]["1.0"],
            "patient_auc": patient.get("auc"),
            "patient_auc_ci": patient.get("auc_ci"),
            "steps": steps,
            "train_s": train_s,
            "flips": args.flips,
            "prediction_s": round(timings["prediction_s"]),
            "test_cases": [r.case_id for r in results],
            "lesion_counts": [list(r.match.counts) for r in results],
            "by_volume": evaluation["by_volume"],
        }
        rows.append(row)
        write_json(work / "row.json", {"key": key, "row": row})
        shown = {k: v for k, v in row.items() if k not in ("test_cases", "lesion_counts", "by_volume")}
        console.print(f"{name}: {json.dumps(shown)} ({time.perf_counter() - start:.0f} s)")
    if args.only is not None:
        return
    if not rows:
        raise SystemExit(f"no model to tabulate in {args.out}")
    same = len({p.replace("\r", "") for p in participants.values()}) == 1
    tests = {tuple(r["test_cases"]) for r in rows}
    lines = [
        "| model | test patients (active) | lesion F1 [95% CI] | lesion sensitivity | FP/scan "
        "| sensitivity @ 1 FP/scan | patient AUC [95% CI] | steps | training s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ci = r["patient_auc_ci"] or [None, None]
        f1_ci = r["lesion_f1_ci"]
        lines.append(
            f"| {r['model']} | {r['test_patients']} ({r['active_test_patients']}) | {_fmt(r['lesion_f1'])} "
            f"[{_fmt(f1_ci[0])}, {_fmt(f1_ci[1])}] | "
            f"{_fmt(r['lesion_sensitivity'])} | {r['fp_per_scan']:.2f} | {_fmt(r['sensitivity_at_1fp'])} | "
            f"{_fmt(r['patient_auc'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] | {r['steps']} | {r['train_s']} |"
        )
    footer = (
        f"\n{args.subjects} subjects per cohort at 2 mm, seed {args.seed}"
        f"{f', plus {args.heldout} held-out patients in every test set' if args.heldout else ''}; "
        f"the same {rows[0]['test_patients']} test "
        f"patients for every model: {len(tests) == 1}; identical lesions and activity across cohorts: {same}. "
        f"Enhancing lesions, msseg rule (6-connected, > 3 mm3); patient score = maximum enhancing probability; "
        f"{N_BOOT} patient-bootstrap resamples, seed 0; test-time flips: {'yes' if args.flips else 'no'}."
    )
    footer += _ratio_line(rows, default) if len(tests) == 1 else ""
    table = "\n".join(lines) + "\n" + footer + "\n" + _volume_table(rows)
    console.print(table)
    (args.out / "signal_curve.md").write_text(table)
    write_json(args.out / "signal_curve.json", {"rows": rows, "same_test_patients": len(tests) == 1,
                                               "same_lesions": same, "args": vars(args)})  # fmt: skip


if __name__ == "__main__":
    main()
