"""A network with prior-exam channels and a ``new`` head (issue 32), against the subtraction and the single exam.

    gdfree synth --out /tmp/long/phantom --subjects 90 --first 2000 --seed 0 --timepoints 2 --jobs 2
    gdfree pair --input /tmp/long/phantom --out /tmp/np/pairs
    gdfree train /tmp/np/train.yaml --out /tmp/np/run             # T1w, T2w, FLAIR + prior channels
    gdfree train /tmp/np/train_flair.yaml --out /tmp/np/run_flair # FLAIR + prior channels
    python benchmarks/longitudinal.py --phantom /tmp/long/phantom --work /tmp/long --train 30   # the pair arms
    python benchmarks/pair_network.py --phantom /tmp/long/phantom --pairs /tmp/np/pairs --work /tmp/np \\
        --long-work /tmp/long --model /tmp/np/run --model /tmp/np/run_flair \\
        --real ../shared/data/open_ms_data/longitudinal/raw            # docs/longitudinal.json "pair_network"

``--model NAME=RUN+RUN+...`` scores an ensemble under NAME: ``gdfree predict --ensemble``'s mean probability at the
mean of its members' thresholds.

The training configs (docs/longitudinal.md) train on sub-2001..2024 (both sessions: the first reads "no prior"),
validate on sub-2025..2030 and hold out sub-2031..2090, the test patients of ``longitudinal.py``.

Phantom: each model predicts the test follow-ups twice, with their prior and without (``WORK/pred-<run>-prior``,
``-none``). New-lesion detection: the ``new`` head's mask (the model's threshold and minimum volume) and the
subtraction (``k`` 6.5, ``longitudinal.py``'s cached differences) against the truly new lesions and against the new
and enlarging ones (msseg rule, pooled F1, 2000 patient resamples). Activity on the reference lesions, scored as
``longitudinal.py`` scores it (its arms recomputed here on the same resamples): the enhancing head with the prior
and without, the ``new`` head's highest probability in the lesion, and a logistic regression of the activity
classifier's ``p_active`` with the ``new`` head (fitted on the 30 training patients).

Real: ``gdfree predict --prior`` with each FLAIR-only model on open_ms_data's longitudinal patients (the T1W and T2W
are not on the FLAIR's grid); its ``new`` mask and the subtraction against the change mask brought onto study 2's
FLAIR (``longitudinal.py``'s transform), as found / of and false detections.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.io.images import read_mask, read_volume, to_sitk
from gdfree.metrics.lesions import DetectionRule, match_lesions
from gdfree.metrics.voxel import dice

_spec = importlib.util.spec_from_file_location("longitudinal", Path(__file__).with_name("longitudinal.py"))
assert _spec is not None and _spec.loader is not None
long = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(long)


class Model:
    """A run folder (``RUN``) or an ensemble of run folders (``NAME=RUN+RUN+...``), as ``--model`` names it."""

    def __init__(self, spec: str) -> None:
        name, _, runs = spec.rpartition("=")
        self.runs = [Path(r) for r in runs.split("+")]
        self.name = name or self.runs[0].name

    def load(self) -> Any:
        """The :class:`~gdfree.infer.model.TrainedModel` with its members (the ensemble's thresholds)."""
        from gdfree.infer.model import TrainedModel

        first, *others = (TrainedModel.load(r) for r in self.runs)
        return first.with_members(others)


def _predict(model: Model, data: Path, out: Path, pairs: Path | None, cases: list[str] | None = None) -> Path:
    """``gdfree predict`` of ``cases`` of ``data`` into ``out`` (once), reading prior-exam images from ``pairs``."""
    from gdfree.predict import predict_dataset

    if not (out / "predictions.tsv").is_file():
        rows = predict_dataset(model.runs[0], data, out, case_ids=cases, pairs=pairs, ensemble=model.runs[1:])
        failed = [r for r in rows if r.get("status") == "failed"]
        if failed:
            raise SystemExit(f"{out}: {len(failed)} cases failed: {failed[0].get('reason')}")
    return out


def _maps(case: dict, pred: Path, tag: str) -> None:
    from scipy import ndimage

    sub = case["sub"]
    anat = pred / sub / "ses-2" / "anat"
    ids = np.arange(1, int(case["labels"].max(initial=0)) + 1)
    for head in ("enhancing", "new"):
        path = anat / f"{sub}_ses-2_desc-{head}_probseg.nii.gz"
        if path.is_file():
            p = read_volume(path).data
            case[f"{tag}_{head}"] = np.asarray(ndimage.maximum(p, case["labels"], ids), float).reshape(len(ids))
    mask = anat / f"{sub}_ses-2_desc-new_mask.nii.gz"
    if mask.is_file():
        case[f"{tag}_new_mask"] = read_mask(mask).data > 0


def phantom(args: argparse.Namespace, models: list[Model]) -> dict[str, Any]:
    cases, k, _ = long.phantom_cases(argparse.Namespace(phantom=args.phantom, work=args.long_work, train=args.train))
    for c in cases:
        c["changed_ref"] = np.isin(c["change"], (1, 2))
    view = args.long_work / "followups"
    test_ids = [f"{c['sub']}_ses-2" for c in cases[args.train:]]
    out: dict[str, Any] = {"subtraction": {ref: long.detection(cases[args.train:], "detected", ref)
                                           for ref in ("new_ref", "changed_ref")}}  # fmt: skip
    scores, thresholds = {}, {}
    for model in models:
        trained = model.load()  # thresholds on the calibrated scale the written probabilities have
        meta = {"modalities": list(trained.modalities), "thresholds": dict(trained.thresholds)}
        name = model.name
        for prior in (True, False):
            tag = f"{name}-{'prior' if prior else 'none'}"
            where = _predict(model, view, args.work / f"pred-{tag}", args.pairs if prior else None, test_ids)
            for c in cases[args.train:]:
                _maps(c, where, tag)
        test = cases[args.train:]
        _phantom_overlay(args, test[9], name)
        out[name] = {"modalities": meta["modalities"], "thresholds": meta["thresholds"],
                     "detection": {ref: long.detection(test, f"{name}-prior_new_mask", ref)
                                   for ref in ("new_ref", "changed_ref")}}  # fmt: skip
        for tag, head in ((f"{name}-prior", "enhancing"), (f"{name}-none", "enhancing"), (f"{name}-prior", "new")):
            arm = f"{name}: {head} head, {'with' if tag.endswith('prior') else 'without'} the prior"
            scores[arm] = [c[f"{tag}_{head}"] for c in test]
            thresholds[arm] = float(trained.thresholds[head])
        for c in test:
            c["pnew"] = c[f"{name}-prior_new"]
        scores[f"{name}: classifier + new head"] = _cross_fitted(test)
        thresholds[f"{name}: classifier + new head"] = 0.5  # each fold's own threshold (_cross_fitted)
    test = cases[args.train:]
    scores.update({"single: network": [c["pmax"] for c in test],
                   "single: activity classifier": [c["pact"] for c in test], "pair": [c["zmax"] for c in test],
                   "truly new (the pair's ceiling)": [c["new"].astype(float) for c in test]})  # fmt: skip
    thresholds.update({**long.shipped_thresholds(), "pair": k, "truly new (the pair's ceiling)": 0.5})
    comparisons = tuple(pair for m in models for pair in (
        (f"{m.name}: enhancing head, with the prior", (f"{m.name}: enhancing head, without the prior",
                                                        "single: activity classifier", "pair")),
        (f"{m.name}: classifier + new head", ("single: activity classifier", f"{m.name}: new head, with the prior")),
        (f"{m.name}: new head, with the prior", ("pair",))))  # fmt: skip
    out["activity"] = long._activity(test, scores, thresholds, comparisons)
    return out


def _phantom_overlay(args: argparse.Namespace, case: dict, name: str) -> None:
    """The model's new-lesion mask on one test pair (WORK/fig/<sub>-<model>.png), truly new lesions in green."""
    sub = case["sub"]
    anat = args.phantom / sub / "ses-2" / "anat"
    stem = args.pairs / sub / "ses-2" / "anat" / f"{sub}_ses-2"
    long._overlay(f"{sub}-{name}", read_volume(anat / f"{sub}_ses-2_FLAIR.nii.gz").data,
                  read_volume(Path(f"{stem}_desc-prior_FLAIR.nii.gz")).data,
                  read_volume(Path(f"{stem}_desc-FLAIRdifference_map.nii.gz")).data, case["new_ref"],
                  case[f"{name}-prior_new_mask"], args.work / "fig",
                  f"green: truly new lesions; red: {name}'s new-lesion mask (with the prior)")  # fmt: skip


def _cross_fitted(test: list[dict], folds: int = 5) -> list[np.ndarray]:
    """A logistic regression of "active" on (logit p_active, logit of the new head's maximum), cross-fitted over the
    test patients (the network trained on the first patients, so its maps there are not held out): each fold's
    lesions are scored by the model and threshold (best F1 over the other folds' lesions) fitted without them, as
    the logit distance from that threshold (so 0.5 is every fold's threshold)."""
    from sklearn.linear_model import LogisticRegression

    def x(case: dict) -> np.ndarray:
        p, q = (np.clip(case[k], 1e-4, 1 - 1e-4) for k in ("pact", "pnew"))
        return np.stack([np.log(p / (1 - p)), np.log(q / (1 - q))], axis=1)

    out: list[np.ndarray] = [np.zeros(0)] * len(test)
    for f in range(folds):
        fit = [c for i, c in enumerate(test) if i % folds != f]
        xs, ys = np.concatenate([x(c) for c in fit]), np.concatenate([c["active"] for c in fit])
        model = LogisticRegression(C=1.0).fit(xs, ys)
        t = long.best_threshold(model.predict_proba(xs)[:, 1], ys)
        for i in range(f, len(test), folds):
            c = test[i]
            p = np.clip(model.predict_proba(x(c))[:, 1], 1e-6, 1 - 1e-6) if len(c["pact"]) else np.zeros(0)
            out[i] = 1 / (1 + np.exp(-(np.log(p / (1 - p)) - np.log(t / (1 - t)))))  # >= 0.5 exactly when p >= t
    return out


def _real_dataset(args: argparse.Namespace) -> tuple[Path, Path]:
    """The real follow-ups as a BIDS dataset (study 2's FLAIR and deepbet's brain mask on it, as ``predict --prior``
    makes its pairs) and their prior-exam images (``gdfree.preprocess.pair_files.write_pair``), under WORK."""
    from gdfree.io.adapters import discover
    from gdfree.io.images import write_volume
    from gdfree.preprocess.brain import learned_brain_mask
    from gdfree.preprocess.pair_files import pair_sessions, write_pair

    bids, pairs = args.work / "real-bids", args.work / "real-pairs"
    if (bids / "dataset_description.json").is_file():
        return bids, pairs
    for prior, followup in pair_sessions(discover(args.real)):
        flair = read_volume(followup.images["FLAIR"])
        anat = bids / f"sub-{followup.subject}" / "ses-2" / "anat"
        write_volume(flair, anat / f"sub-{followup.subject}_ses-2_FLAIR.nii.gz")
        brain = anat.parents[2] / "derivatives" / "brain" / anat.relative_to(bids)
        brain = write_volume(flair.with_data(learned_brain_mask(flair).astype(np.uint8)),
                             brain / f"sub-{followup.subject}_ses-2_desc-brain_mask.nii.gz")  # fmt: skip
        flair_path = anat / f"sub-{followup.subject}_ses-2_FLAIR.nii.gz"
        write_pair(prior, replace(followup, session="2", images={"FLAIR": flair_path}, masks={"brain": brain}), pairs)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "real follow-ups", "BIDSVersion": "1.9.0"}))
    return bids, pairs


def real(args: argparse.Namespace, models: list[Model]) -> dict[str, Any]:
    """Each FLAIR-only model's new mask on the real pairs against their change masks (module docstring)."""
    rule = DetectionRule()
    bids, pairs = _real_dataset(args)
    out: dict[str, Any] = {}
    for model in models:
        if json.loads((model.runs[0] / "model.json").read_text())["modalities"] != ["FLAIR", "priorFLAIR", "diffFLAIR"]:
            continue
        pred = _predict(model, bids, args.work / f"real-{model.name}", pairs)
        rows = []
        for folder in sorted(p for p in args.real.glob("patient*") if p.is_dir()):
            stem = f"sub-long{folder.name}_ses-2"
            anat, prior = (root / f"sub-long{folder.name}" / "ses-2" / "anat" for root in (pred, pairs))
            flair = read_volume(folder / "study2_FLAIR.nii.gz")
            gt = long._to_followup(folder / "gt.nii.gz", to_sitk(flair), folder / "study2_FLAIR_to_common_space.txt")
            gt &= read_mask(next((bids / "derivatives").rglob(f"{stem}_desc-brain_mask.nii.gz"))).data > 0
            found = read_mask(anat / f"{stem}_desc-new_mask.nii.gz").data > 0
            m = match_lesions(found, gt, flair.spacing_mm, rule)
            rows.append({"patient": folder.name, "detected": m.tp_ref, "of": m.n_ref, "true_found": m.tp_pred,
                         "false_found": m.n_pred - m.tp_pred, "f1": m.f1, "dice": dice(found, gt),
                         "any_overlap": long.any_overlap(found, gt, flair.spacing_mm)})  # fmt: skip
            long._overlay(f"{folder.name}-{model.name}", flair.data,
                          read_volume(prior / f"{stem}_desc-prior_FLAIR.nii.gz").data,
                          read_volume(prior / f"{stem}_desc-FLAIRdifference_map.nii.gz").data, gt, found,
                          args.work / "fig", f"green: change mask (gt.nii.gz); red: {model.name}'s new-lesion mask")
            long.detections_figure(f"{folder.name}-{model.name}-detections", flair.data,
                                   read_volume(prior / f"{stem}_desc-prior_FLAIR.nii.gz").data,
                                   read_volume(prior / f"{stem}_desc-FLAIRdifference_map.nii.gz").data, gt, found,
                                   flair.spacing_mm, args.work / "fig")  # fmt: skip
        out[model.name] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phantom", type=Path)
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--real", type=Path)
    parser.add_argument("--model", type=Model, action="append", required=True, help="RUN or NAME=RUN+RUN+...")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--long-work", type=Path, default=Path("/tmp/long"))
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("docs/longitudinal.json"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    entry = result.setdefault("pair_network", {})
    if args.phantom:
        entry["phantom"] = phantom(args, args.model)
    if args.real:
        entry["real"] = real(args, args.model)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
