"""Where the dropout sits, and what MC dropout then costs and does to the masks (issue 30).

For each trained model (``--model NAME=FOLDER``, e.g. the shipped decoder-dropout network and the same recipe
retrained with ``dropout_site: head``) on every case of a phantom cohort (``--cohort``): one deterministic
pass (``predict``'s path) and ``--mc`` MC dropout samples (every dropout layer; for a decoder-dropout model also
only the last one, ``--mc-layers last``), all at the model's voxel size, seed 0. An MC path's masks come from
what ``predict`` thresholds (the samples' expectation: for head dropout the deterministic pass, else their mean);
``..._sample_mean`` rows threshold the plain mean of the samples instead (same samples, same seconds). Per path:

- seconds per exam and the ratio to the deterministic pass of the same model, measured exam by exam in one run;
- enhancing-lesion F1 (msseg, pooled over patients, patient-bootstrap 95% CI) of the masks (the path's probability at
  the model's thresholds, components above its minimum lesion volume);
- bias of the masks: Dice of each head's MC mask with the deterministic mask and the ratio of their voxel counts
  (1 is unbiased; below 1 the sample mean shrinks the masks), pooled over the cohort.

    python benchmarks/mc_dropout_site.py --model decoder=src/gdfree/pretrained/network --model head=RUN \\
        --cohort COHORT --mc 10 --out OUT/mc_dropout_site.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _paths(model: Any, mc: int) -> dict[str, dict[str, Any]]:
    """Path name -> keyword arguments of :meth:`TrainedModel.sample` (empty: the deterministic pass)."""
    from gdfree.infer.sampling import dropout_layers

    paths: dict[str, dict[str, Any]] = {"deterministic": {}, f"mc{mc}": {"mc": mc}}
    if len(dropout_layers(model.network)) > 1:
        paths[f"mc{mc}_last"] = {"mc": mc, "mc_layers": "last"}
    return paths


def measure(folder: Path, cohort: Path, mc: int) -> dict[str, Any]:
    """Per path: seconds per exam, masks' counts against the reference and against the deterministic masks."""
    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover
    from gdfree.metrics.lesions import match_lesions

    model = TrainedModel.load(folder)
    paths = _paths(model, mc)
    rows: dict[str, dict[str, Any]] = {p: {"seconds": [], "counts": [], "overlap": {}} for p in paths}
    for files in discover(cohort):
        case = load_array_case(files, model.modalities, ("enhancing",), normalisation=model.normalisation)
        masks = {}
        for name, kwargs in paths.items():
            start = time.perf_counter()
            if kwargs:
                stack = model.sample(case.image, brain=case.brain, spacing_mm=case.spacing_mm, expectation=True,
                                     **kwargs)  # fmt: skip
                found = {name: stack[-1], f"{name}_sample_mean": stack[:-1].mean(axis=0)}
            else:
                found = {name: model.predict(case.image, "cpu", case.brain, case.spacing_mm)[0]}
            seconds = time.perf_counter() - start
            for key, prob in found.items():
                rows.setdefault(key, {"seconds": [], "counts": [], "overlap": {}})["seconds"].append(seconds)
                probs = {h: np.where(case.brain, prob[i], 0.0) for i, h in enumerate(model.heads)}
                masks[key] = model.masks(probs, case.spacing_mm)
                ref = case.labels["enhancing"]
                assert ref is not None
                rows[key]["counts"].append(list(match_lesions(masks[key]["enhancing"], ref, case.spacing_mm,
                                                              model.lesion_rule()).counts))  # fmt: skip
        for name in masks:
            for head, mask in masks[name].items():
                det = masks["deterministic"][head]
                acc = rows[name]["overlap"].setdefault(head, [0, 0, 0])
                acc[0] += int((mask & det).sum())
                acc[1] += int(mask.sum())
                acc[2] += int(det.sum())
    return {"model": str(folder), "heads": list(model.heads), "paths": rows}


def summarise(result: dict[str, Any], rule: str = "msseg", n_boot: int = 2000) -> dict[str, Any]:
    """F1 with its CI, time ratios and mask agreement of every path of one model."""
    from gdfree.metrics.lesions import bootstrap_pooled_f1, lesion_f1
    from gdfree.metrics.patient import percentile_ci

    paths = result["paths"]
    names = list(paths)
    counts = [np.asarray(paths[p]["counts"]) for p in names]
    boot = bootstrap_pooled_f1(counts, rule, n_boot=n_boot, seed=0)
    base = np.asarray(paths["deterministic"]["seconds"])
    out = {}
    for j, name in enumerate(names):
        total = counts[j].sum(axis=0)
        seconds = np.asarray(paths[name]["seconds"])
        out[name] = {
            "enhancing_f1": lesion_f1(rule, *(int(v) for v in total)),
            "enhancing_f1_ci": list(percentile_ci(boot[:, j]))[:2],
            "seconds_per_exam": float(seconds.mean()),
            "ratio_to_one_pass": float(np.median(seconds / base)),
            "mask_vs_deterministic": {
                h: {"dice": 2 * a / (b + c) if b + c else None, "voxel_ratio": b / c if c else None}
                for h, (a, b, c) in paths[name]["overlap"].items()
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=FOLDER of a trained model")
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--mc", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {}
    for item in args.model:
        name, folder = item.split("=", 1)
        raw = measure(Path(folder), args.cohort, args.mc)
        report[name] = {"model": raw["model"], "summary": summarise(raw), "raw": raw}
        print(name, json.dumps(report[name]["summary"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
