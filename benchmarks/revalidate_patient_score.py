"""Choose the shipped network's patient score again on its own validation patients (issue 33).

The shipped network (``src/gdfree/pretrained/network``) was validated when the patient score was the maximum
voxel probability (threshold 0.99974). Its validation patients are phantoms (seed 0, 2 mm, signature strength 1,
the framings cohort ``cohort-1``), so they can be written again byte for byte: this script writes each one,
checks that its input files' SHA-256 are among those the model records as trained or validated on (the same
patients, not look-alikes), predicts them with the shipped weights and runs the validation's patient-score
choice (:func:`gdfree.train.validation.patient_scores`, :func:`~gdfree.train.validation.choose_patient_score`)
at the model's own threshold and minimum lesion volume. With ``--write`` it stores the outcome in the shipped
``model.json`` (``patient_score``, ``patient_threshold``, ``lesion_calibration`` and the validation fields); the
weights are untouched.

    python benchmarks/revalidate_patient_score.py --work /tmp/reval [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODEL = Path(__file__).parents[1] / "src/gdfree/pretrained/network"


def main() -> None:
    from gdfree.arrays import sigmoid
    from gdfree.data.cases import load_array_case
    from gdfree.io.adapters import discover
    from gdfree.metrics.lesions import DetectionRule, label_lesions
    from gdfree.models.checkpoint import load_model
    from gdfree.models.forward import predict_volume
    from gdfree.models.record import ModelRecord
    from gdfree.phantom.cohort import PhantomConfig, write_cohort
    from gdfree.train.validation import choose_patient_score, patient_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--write", action="store_true", help="store the choice in the shipped model.json")
    args = parser.parse_args()

    record = ModelRecord.read(MODEL / "model.json")
    network, _ = load_model(MODEL)
    seen = set(record.training_fingerprints)
    rule = DetectionRule(**record.rule)
    heads = list(record.heads)
    e = heads.index("enhancing")
    cases = []
    for key in record.provenance["split"]["val"]:
        subject = key.rsplit(":", 1)[1]
        folder = args.work / f"sub-{subject}"
        if not folder.is_dir():
            write_cohort(folder, PhantomConfig(resolution_mm=2, signature_strength=1.0), 1, 0, first=int(subject) - 1)
        (files,) = discover(folder)
        case = load_array_case(files, record.modalities, ("enhancing",), normalisation=record.normalisation)
        if not set(case.fingerprints) <= seen:
            raise SystemExit(f"{key}: written again, its files differ from those the model validated on")
        cases.append(case)
    probs = [np.where(c.brain, sigmoid(predict_volume(network, c.image, "cpu", logits_only=True)[e]), 0.0)
             for c in cases]  # fmt: skip
    labelled = [(c, p) for c, p in zip(cases, probs, strict=True)]
    threshold, min_mm3 = record.thresholds["enhancing"], max(rule.min_volume_mm3, record.min_lesion_mm3)
    candidates, fitted = patient_scores(probs, labelled, threshold, min_mm3, rule)
    active = [int(label_lesions(np.asarray(c.labels["enhancing"]), c.spacing_mm, rule.connectivity,
                                rule.min_volume_mm3)[1] > 0) for c in cases]  # fmt: skip
    chosen = choose_patient_score(active, candidates)
    if fitted is not None:
        chosen["lesion_calibration_slope"], chosen["lesion_calibration_intercept"] = fitted
    print(json.dumps({"patients": len(cases), "active": sum(active), **chosen}, indent=1))
    if args.write:
        validation = {**record.provenance.get("validation", {}), **chosen}
        provenance = {**record.provenance, "validation": validation}
        updated = record.updated(patient_score=chosen["patient_score"], patient_threshold=chosen["patient_threshold"],
                                 lesion_calibration=fitted, provenance=provenance)  # fmt: skip
        updated.write(MODEL / "model.json")
        print(f"written: {MODEL / 'model.json'}")


if __name__ == "__main__":
    main()
