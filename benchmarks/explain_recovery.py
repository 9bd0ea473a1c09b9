"""Do the explanations recover a known carrier? Modality ranking, profile peak and randomisation checks.

Each model was trained on a synthetic cohort whose pre-contrast signature of activity is planted in ONE
modality (``PhantomConfig.signature_modalities``): FLAIR (a perilesional rim at ``halo_radius_mm`` beyond
the border) or T1w (iso-intensity inside the lesion). On the model's held-out test patients, every lesion
of the all-lesion mask is explained, grouped as active (touching the reference enhancing label, where the
signature is planted) or inactive: occlusion (4 replacements) and permutation importance per modality
for all of them, integrated gradients, Seg-Grad-CAM maps and lesion-centred profiles for up to
``--max-mapped`` lesions per group and case, with patient-bootstrap 95% CIs; the ranking that answers
"which modality carries the activity signal" is the separation (importance on active minus inactive
lesions), also reported per group; and the parameter- (and, given a run trained with
``randomise_labels: true``, label-) randomisation checks. Prints, per model and method, whether the planted
modality ranks first with a CI clear of the others', where the planted modality's profile peaks, the
checks' pass rate, and the time to explain one lesion of one 2 mm case (all methods, through the CLI path).

    python benchmarks/explain_recovery.py --out /tmp/explain \\
        --run flair:FLAIR:/tmp/gd/flair-model/run:/tmp/gd/flair --run t1:T1w:/tmp/gd/t1-model/run:/tmp/gd/t1 \\
        [--label-randomised flair:/tmp/gd/flair-shuffled/run]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from gdfree.explain import explain_dataset
from gdfree.io.tables import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--run", action="append", required=True, help="NAME:PLANTED_MODALITY:RUN_DIR:COHORT")
    parser.add_argument("--label-randomised", action="append", default=[], help="NAME:RUN_DIR")
    parser.add_argument("--max-mapped", type=int, default=3, help="mapped lesions per group and case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shuffled = dict(item.split(":", 1) for item in args.label_randomised)
    report = {}
    lines = []
    for spec in args.run:
        name, planted, run, cohort = spec.split(":", 3)
        tests = [p.split(":")[-1] for p in json.loads((Path(run) / "split.json").read_text())["test_patients"]]
        start = time.perf_counter()
        result = explain_dataset(run, cohort, args.out / name, case_ids=[f"sub-{t}" for t in tests],
                                 source="lesion-mask", all_lesions=True, max_mapped=args.max_mapped,
                                 methods=("ig", "gradcam"), label_randomised=shuffled.get(name),
                                 seed=args.seed)  # fmt: skip
        seconds = time.perf_counter() - start
        groups = [r["group"] for r in result.lesions]
        lines.append(f"\n## {name}: signature planted in {planted}; {len(tests)} test patients, "
                     f"{groups.count('reference active')} active and {groups.count('reference inactive')} inactive "
                     f"lesions ({seconds:.0f} s)\n")  # fmt: skip
        verdicts = {}
        for title, table in (
            ("separation (active minus inactive)", result.separation),
            ("active lesions", [r for r in result.summary if r["group"] == "reference active"]),
        ):
            lines.append(f"\n{title}:\n")
            lines.append("| method | rank of planted | planted mean [95% CI] | best other: modality, mean [95% CI] | "
                         "planted first, CI clear |")  # fmt: skip
            lines.append("| --- | --- | --- | --- | --- |")
            for method in dict.fromkeys(r["method"] for r in table):
                rows = {r["modality"]: r for r in table if r["method"] == method}
                mine = rows[planted]
                others = [r for m, r in rows.items() if m != planted]
                best = max(others, key=lambda r: r["mean"])
                clear = mine["rank"] == 1 and all(mine["ci_low"] > r["ci_high"] for r in others)
                verdicts[f"{title}: {method}"] = clear
                lines.append(f"| {method} | {mine['rank']} | {mine['mean']:.3f} [{mine['ci_low']:.3f}, "
                             f"{mine['ci_high']:.3f}] | {best['modality']}, {best['mean']:.3f} [{best['ci_low']:.3f}, "
                             f"{best['ci_high']:.3f}] | {'yes' if clear else 'no'} |")  # fmt: skip
        profile = [r for r in result.profiles if r["method"] == "ig" and r["modality"] == planted
                   and r["group"] == "reference active"]  # fmt: skip
        inactive = [r for r in result.profiles if r["method"] == "ig" and r["modality"] == planted
                    and r["group"] == "reference inactive"]  # fmt: skip
        outside = [r for r in profile if r["bin_low_mm"] >= 0 and r["mean"] == r["mean"]]
        peak_all = max(profile, key=lambda r: r["mean"] if r["mean"] == r["mean"] else -np.inf) if profile else None
        peak_out = max(outside, key=lambda r: r["mean"]) if outside else None
        lines.append(
            "\nIG profile of "
            + planted
            + " (reference active lesions, each scaled to its largest bin): "
            + ", ".join(f"({r['bin_low_mm']:g}, {r['bin_high_mm']:g}] {r['mean']:.2f}" for r in profile)
        )
        lines.append(
            "IG profile of "
            + planted
            + " (reference inactive lesions): "
            + ", ".join(f"({r['bin_low_mm']:g}, {r['bin_high_mm']:g}] {r['mean']:.2f}" for r in inactive)
        )
        if peak_all and peak_out:
            lines.append(f"peak: ({peak_all['bin_low_mm']:g}, {peak_all['bin_high_mm']:g}] mm; outside the border: "
                         f"({peak_out['bin_low_mm']:g}, {peak_out['bin_high_mm']:g}] mm")  # fmt: skip
        checks = {}
        for control in ("parameters", "labels"):
            for method in ("ig", "gradcam"):
                rho = [r["rank_correlation"] for r in result.sanity if r["control"] == control
                       and r["method"] == method and r["rank_correlation"] == r["rank_correlation"]]  # fmt: skip
                if rho:
                    checks[f"{control}/{method}"] = {
                        "median": float(np.median(rho)), "max_abs": float(np.max(np.abs(rho))),
                        "passed": sum(abs(x) < 0.3 for x in rho), "n": len(rho),
                    }  # fmt: skip
        lines.append("randomisation checks (Spearman of signed maps; pass < 0.3): " + "; ".join(
            f"{k}: median {v['median']:.3f}, max |rho| {v['max_abs']:.3f}, {v['passed']}/{v['n']} pass"
            for k, v in checks.items()))  # fmt: skip
        report[name] = {"planted": planted, "verdicts": verdicts, "summary": result.summary,
                        "separation": result.separation, "checks": checks,
                        "profile": profile, "seconds": seconds, "lesions": len(result.lesions)}  # fmt: skip
    first = args.run[0].split(":", 3)
    tests = json.loads((Path(first[2]) / "split.json").read_text())["test_patients"]
    one = f"sub-{tests[0].split(':')[-1]}"
    start = time.perf_counter()
    timed = explain_dataset(first[2], first[3], args.out / "one-lesion", case_ids=[one], seed=args.seed)
    seconds = time.perf_counter() - start
    lines.append(f"\nOne lesion of one 2 mm case ({one}, {first[0]} model, all methods and checks, the most probable "
                 f"predicted lesion; occlusion importance for all {len(timed.lesions)} of its lesions): "
                 f"{seconds:.1f} s; " + ", ".join(f"{k} {v:.1f}" for k, v in timed.timings.items()))  # fmt: skip
    report["one_lesion_s"] = seconds
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / "explain_recovery.md").write_text(text)
    write_json(args.out / "explain_recovery.json", report)


if __name__ == "__main__":
    main()
