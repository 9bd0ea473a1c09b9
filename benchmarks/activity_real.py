"""The lesion-level activity classifier on real lesions: which phantom lesions and which feature scale make its
calls on real exams plausible, at no cost on the phantom (issue 31).

Each arm fits the classifier by ``gdfree activity``'s path (:func:`gdfree.activity.fit_activity_dataset`: the
shipped network's maps as features, 20% of the patients validate and set the threshold, seed 0) on one or more
phantom cohorts, with its intensity features in the network's normalisation or as ratios to the case's white
matter (``--feature-reference``). ``shipped`` is the shipped classifier as it is. Every arm is scored by the same
code on:

- phantom test cohorts (``--test NAME=DATASET``, patients no arm and not the shipped network saw): lesion AUC and
  F1 at the arm's threshold, with patient-bootstrap 95% CIs;
- the real patients (``--real``, 2 mm): how many of each one's visible (reference) lesions it calls active,
  through ``gdfree predict --activity`` (each patient has at most one derived enhancing component, so a plausible
  classifier calls few).

Baselines in the same table: every lesion active (F1), the lesion's volume alone (AUC).

    python benchmarks/activity_real.py --arm wm-default=/tmp/fr2/cohort-1-activity:white-matter \\
        --arm net-both=/tmp/fr2/cohort-1-activity+/tmp/s41/act-rl2:network \\
        --test default=/tmp/fr2/cohort-1-heldout --test real-contrast=/tmp/s41/test-rl \\
        --real /tmp/rl/real2mm --out /tmp/s41/activity

Cohorts fitted together must hold different patients (``act-rl2``: seed 3, ``--first 3000``): the same seed's
patients with other contrasts are the same patients, and the classifier refuses a patient in both its training and
validation parts. An arm's seed (``NAME=COHORTS:REFERENCE:SEED``, default 0) seeds its split and its booster:
the same arm refitted with other seeds shows how much its calls on real lesions owe to one fit.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

_spec = importlib.util.spec_from_file_location("real_lesions", Path(__file__).with_name("real_lesions.py"))
assert _spec is not None and _spec.loader is not None
real_lesions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(real_lesions)

N_BOOT = 2000


def parse_arm(spec: str) -> tuple[str, list[Path], str, int]:
    """``NAME=COHORT[+COHORT...]:REFERENCE[:SEED]`` -> (name, cohorts, reference, seed of split and booster)."""
    name, rest = spec.split("=", 1)
    cohorts, reference, *seed = rest.split(":")
    return name, [Path(c) for c in cohorts.split("+")], reference, int(seed[0]) if seed else 0


def fit_arm(spec: str, out: Path, network: Path) -> tuple[str, Path]:
    """An arm's spec (:func:`parse_arm`) -> (name, classifier folder), fitted unless already there."""
    from gdfree.activity import ActivityConfig, fit_activity_dataset
    from gdfree.train.config import SplitConfig

    name, cohorts, reference, seed = parse_arm(spec)
    folder = out / "classifiers" / name
    if not (folder / "activity.json").is_file():
        fit_activity_dataset(cohorts, folder, network=network, split=SplitConfig(test_fraction=0.0, seed=seed),
                             cfg=ActivityConfig(seed=seed, feature_reference=reference))  # fmt: skip
    return name, folder


def phantom_scores(classifiers: dict[str, Any], dataset: Path, network: Any) -> dict[str, Any]:
    """Per arm, the lesion-level summary on ``dataset``'s lesions (each case's network maps computed once), and the
    baselines."""
    from gdfree.activity.classifier import case_lesions
    from gdfree.data.cases import load_array_case
    from gdfree.io.adapters import discover
    from gdfree.metrics.activity import LesionActivity, lesion_activity_summary

    per_arm: dict[str, list[LesionActivity]] = {name: [] for name in classifiers}
    volume: list[LesionActivity] = []
    everything: list[LesionActivity] = []
    for files in sorted(discover(dataset), key=lambda c: c.case_id):
        case = load_array_case(files, network.modalities, ("lesion", "enhancing"), normalisation=network.normalisation)
        maps = network.probabilities(case.image, brain=case.brain)
        by_reference: dict[str, Any] = {}
        for name, clf in classifiers.items():
            clf.refuse_if_seen(case.case_id, case.fingerprints)
            if clf.feature_reference not in by_reference:
                by_reference[clf.feature_reference] = case_lesions(
                    case, np.asarray(case.labels["lesion"]), _Cached(network, maps), modalities=clf.modalities,
                    reference=clf.feature_reference,
                )  # fmt: skip
            items = by_reference[clf.feature_reference]
            if items.n:
                per_arm[name].append(LesionActivity(case.case_id, items.active, clf.p_active(items.features)))
        items = next(iter(by_reference.values()))
        if items.n:
            volume.append(LesionActivity(case.case_id, items.active, items.features[:, 0].astype(float)))
            everything.append(LesionActivity(case.case_id, items.active, np.ones(items.n)))
    rows = {name: lesion_activity_summary(cases, classifiers[name].threshold, N_BOOT) for name, cases in
            per_arm.items()}  # fmt: skip
    rows["baseline: every lesion active"] = lesion_activity_summary(everything, 0.5, N_BOOT)
    rows["baseline: lesion volume alone"] = lesion_activity_summary(volume, math.inf, N_BOOT)
    return rows


class _Cached:
    """A network whose probability maps for the one case at hand are already computed."""

    def __init__(self, network: Any, maps: np.ndarray) -> None:
        self.heads, self.normalisation, self.maps = network.heads, network.normalisation, maps

    def probabilities(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.maps


def markdown(result: dict[str, Any]) -> str:
    tests = list(result["phantom"])
    head = ["arm", "feature reference", "fitted on (seed)"]
    for t in tests:
        head += [f"{t}: lesion AUC [95% CI]", f"{t}: F1 [95% CI]"]
    head += [f"{p}: called active / visible" for p in real_lesions.PATIENTS]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    names = result["phantom"][tests[0]] if tests else result["real"]
    for name in names:
        arm = result["arms"].get(name, {})
        row = [name, arm.get("reference", ""), f"{arm['cohorts']} ({arm.get('seed', 0)})" if arm else ""]
        for t in tests:
            r = result["phantom"][t][name]
            row += [f"{r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]",
                    f"{r['f1']:.3f} [{r['f1_ci'][0]:.3f}, {r['f1_ci'][1]:.3f}]" if math.isfinite(r["f1"]) else "-"]
        real = {r["case"].removeprefix("sub-"): r for r in result["real"].get(name, [])}
        row += [f"{real[p]['called_active']} / {real[p]['visible_lesions']} (max p {real[p]['max_p_active']:.2f})"
                if p in real else "-" for p in real_lesions.PATIENTS]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from gdfree.activity import ActivityClassifier
    from gdfree.demo import PRETRAINED
    from gdfree.infer.model import TrainedModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", default=[],
                        help="NAME=COHORT[+COHORT...]:network|white-matter[:SEED]")
    parser.add_argument("--test", action="append", default=[], help="NAME=DATASET of phantom test patients")
    parser.add_argument("--real", type=Path, required=True, help="the real patients, prepared at 2 mm")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="activity_real", help="file name of the JSON and markdown results")
    parser.add_argument("--network", type=Path, default=PRETRAINED / "network",
                        help="the network whose maps the arms read (default: the shipped one, whose own classifier "
                             "is then the arm `shipped`); real patients it trained on are scored all the same")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    network_dir = args.network.resolve()
    shipped = network_dir == (PRETRAINED / "network").resolve()
    folders = {**({"shipped": PRETRAINED / "activity"} if shipped else {}),
               **dict(fit_arm(a, args.out, network_dir) for a in args.arm)}  # fmt: skip
    classifiers = {name: ActivityClassifier.load(f) for name, f in folders.items()}
    arms: dict[str, Any] = {}
    if shipped:
        arms["shipped"] = {"reference": classifiers["shipped"].feature_reference, "cohorts": "shipped"}
    for a in args.arm:
        name, cohorts, reference, seed = parse_arm(a)
        arms[name] = {"reference": reference, "cohorts": " + ".join(c.name for c in cohorts), "seed": seed}
    network = TrainedModel.load(network_dir)
    result: dict[str, Any] = {"arms": arms, "phantom": {}, "real": {}}
    for t in args.test:
        name, dataset = t.split("=", 1)
        result["phantom"][name] = phantom_scores(classifiers, Path(dataset), network)
        print(name, {k: (round(v["auc"], 3), round(v["f1"], 3)) for k, v in result["phantom"][name].items()})
    for name, folder in folders.items():
        result["real"][name] = real_lesions.activity_plausibility(args.real.resolve(), args.out, network_dir, folder,
                                                                  allow_training_cases=not shipped)
        print(name, result["real"][name])
    (args.out / args.name).with_suffix(".json").write_text(json.dumps(result, indent=1))
    (args.out / args.name).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
