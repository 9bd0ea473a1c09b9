"""How much of Gd enhancement can a pre-contrast model learn, as a function of the phantom's signature?

Synthesises one 2 mm cohort per signature strength with the same seed (same anatomy, lesions and activity;
only the pre-contrast signature of active lesions differs), trains the multitask network on each with the
same config, split and step budget, and tests every model on the same held-out patients. The oracle
(inputs + post-Gd T1w, ``oracle: true``) is trained on the default-strength cohort as the ceiling.
Prints one table: pooled lesion F1 (msseg rule), FROC sensitivity at 1 FP/scan, patient AUC with its
bootstrap 95% CI; writes it to ``--out``/signal_curve.md and .json.

    python benchmarks/signal_curve.py --out /tmp/signal [--subjects 50] [--steps 600] [--seed 0]

A model whose ``row.json`` exists in ``--out`` for the same subjects, steps and seed is not retrained, so a run
can be extended (``--strengths 1`` first, then the rest) or continued after an interruption. ``--only MODEL``
(``oracle`` or a strength) trains just that model and prints no table: start one process per model (with
``OMP_NUM_THREADS`` shared out), then run without ``--only`` to collect the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from rich.console import Console

from gdfree.demo import demo_config, train_and_evaluate
from gdfree.io.tables import write_json
from gdfree.phantom.cohort import PhantomConfig, write_cohort


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


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
        if not table.is_file() or len(table.read_text().strip().splitlines()) - 1 != args.subjects:
            cfg_p = PhantomConfig(resolution_mm=2, signature_strength=strength)
            write_cohort(cohort, cfg_p, args.subjects, args.seed, jobs=args.jobs, overwrite=True)
        participants[strength] = (cohort / "participants.tsv").read_text()
        cfg = demo_config(cohort, args.steps, args.seed)
        cfg = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, test_fraction=args.test_fraction),
                                  workers=args.workers, time_budget_s=args.time_budget)  # fmt: skip
        if oracle:
            cfg = dataclasses.replace(cfg, modalities=(*cfg.modalities, "T1gd"), oracle=True)
        work = args.out / ("oracle" if oracle else f"model-{strength:g}")
        key = {"subjects": args.subjects, "steps": args.steps, "seed": args.seed, "test_fraction": args.test_fraction}
        if (work / "row.json").is_file() and json.loads((work / "row.json").read_text())["key"] == key:
            rows.append(json.loads((work / "row.json").read_text())["row"])
            console.print(f"{name}: reusing {work / 'row.json'}")
            continue
        if work.exists():
            shutil.rmtree(work)
        start = time.perf_counter()
        summary, results, evaluation, _, timings = train_and_evaluate(cfg, work, cohort, device=args.device)
        pooled, patient = evaluation["pooled_lesions"], evaluation.get("patient", {})
        row = {
            "model": name,
            "test_patients": len(results),
            "active_test_patients": patient.get("n_active"),
            "lesion_f1": pooled["lesion_f1"],
            "lesion_sensitivity": pooled["lesion_sensitivity"],
            "fp_per_scan": pooled["fp_per_scan"],
            "sensitivity_at_1fp": evaluation["froc"]["sensitivity_at_fp"]["1.0"],
            "patient_auc": patient.get("auc"),
            "patient_auc_ci": patient.get("auc_ci"),
            "steps": summary["steps"],
            "train_s": round(timings["training_s"]),
            "test_cases": [r.case_id for r in results],
        }
        rows.append(row)
        write_json(work / "row.json", {"key": key, "row": row})
        console.print(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'test_cases'})} "
                      f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    if args.only is not None:
        return
    same = len({p.replace("\r", "") for p in participants.values()}) == 1
    tests = {tuple(r["test_cases"]) for r in rows}
    lines = [
        "| model | test patients (active) | lesion F1 | lesion sensitivity | FP/scan | sensitivity @ 1 FP/scan "
        "| patient AUC [95% CI] | steps | training s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ci = r["patient_auc_ci"] or [None, None]
        lines.append(
            f"| {r['model']} | {r['test_patients']} ({r['active_test_patients']}) | {_fmt(r['lesion_f1'])} | "
            f"{_fmt(r['lesion_sensitivity'])} | {r['fp_per_scan']:.2f} | {_fmt(r['sensitivity_at_1fp'])} | "
            f"{_fmt(r['patient_auc'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] | {r['steps']} | {r['train_s']} |"
        )
    footer = (
        f"\n{args.subjects} subjects per cohort at 2 mm, seed {args.seed}; the same {rows[0]['test_patients']} test "
        f"patients for every model: {len(tests) == 1}; identical lesions and activity across cohorts: {same}. "
        f"Enhancing lesions, msseg rule (6-connected, > 3 mm3); patient score = maximum enhancing probability; "
        f"2000 bootstrap resamples, seed 0."
    )
    table = "\n".join(lines) + "\n" + footer + "\n"
    console.print(table)
    (args.out / "signal_curve.md").write_text(table)
    write_json(args.out / "signal_curve.json", {"rows": rows, "same_test_patients": len(tests) == 1,
                                               "same_lesions": same, "args": vars(args)})  # fmt: skip


if __name__ == "__main__":
    main()
