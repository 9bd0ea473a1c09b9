"""Validation and calibration of a network on the validation patients: lesion F1 at every threshold and minimum
lesion volume, the patient threshold, and one temperature per head (what ``model.json`` records).

Full-volume predictions of the validation cases (:func:`gdfree.models.forward.predict_volume`), scored with the
evaluation code's FROC counts and lesion F1, so the thresholds chosen here are those ``evaluate`` would score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdfree.arrays import sigmoid
from gdfree.data.cases import ArrayCase
from gdfree.data.translation import (
    DEFAULT_CALIBRATION,
    TRANSLATION_HEAD,
    enhancement_probability,
    enhancement_z,
    fit_enhancement_calibration,
)
from gdfree.metrics.froc import froc_counts
from gdfree.metrics.lesions import DetectionRule, label_lesions, lesion_f1, match_lesions
from gdfree.metrics.patient import (
    PROBABILITY_SCORES,
    fit_lesion_calibration,
    lesion_maxima,
    probability_score,
    roc_auc,
)
from gdfree.models.checkpoint import load_model
from gdfree.models.forward import predict_volume
from gdfree.models.record import ModelRecord

__all__ = ["MIN_LESION_MM3", "THRESHOLDS", "calibrate", "choose_patient_score", "fit_temperatures", "patient_scores",
           "patient_threshold", "validate"]  # fmt: skip

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.95, 0.05))
"""Decision thresholds tried on the validation patients."""

MIN_LESION_MM3 = (0.0, 10.0, 20.0, 30.0, 50.0)
"""Minimum predicted lesion volumes tried with them (components of this volume or less are dropped; at
2 mm, 8 mm3 a voxel: 1, 2, 3 and 6 voxels or less)."""


def validate(
    model: torch.nn.Module, cases: list[ArrayCase], heads: tuple[str, ...], rule: DetectionRule, device: str,
    t1_channel: int | None = None, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Full-volume prediction of the validation cases: per head the pooled lesion F1 at each threshold and
    minimum predicted lesion volume (:data:`MIN_LESION_MM3`), the best pair (ties: the smallest volume,
    then the lowest threshold), and (for ``enhancing``) the patient score, its AUC and threshold
    (:func:`choose_patient_score`).

    A ``t1gd`` head adds ``t1gd_mae`` (brain MAE of the synthetic post-Gd T1w, T1w z units); without an
    ``enhancing`` head the enhancing probability is read from its image (:mod:`gdfree.data.translation`,
    from channel ``t1_channel``) with a calibration fitted on these cases (``translation_calibration``)."""
    model.eval()
    logits = [predict_volume(model, c.image, device, logits_only=True) for c in cases]
    probs = [{h: sigmoid(z[i]) for i, h in enumerate(heads) if h != TRANSLATION_HEAD} for z in logits]
    out: dict[str, Any] = {}
    scored = [h for h in heads if h != TRANSLATION_HEAD]
    if TRANSLATION_HEAD in heads:
        t = heads.index(TRANSLATION_HEAD)
        errors = [
            float(np.abs(z[t] - c.labels[TRANSLATION_HEAD])[c.brain].mean())
            for c, z in zip(cases, logits, strict=True)
            if c.labels.get(TRANSLATION_HEAD) is not None
        ]
        out["t1gd_mae"] = float(np.mean(errors)) if errors else math.nan
        if "enhancing" not in heads and t1_channel is not None:
            zs = [enhancement_z(c.image[t1_channel], z[t], c.brain) for c, z in zip(cases, logits, strict=True)]
            pairs = [(z, c) for z, c in zip(zs, cases, strict=True) if c.labels.get("enhancing") is not None]
            try:
                calibration = fit_enhancement_calibration(
                    [z for z, _ in pairs],
                    [np.asarray(c.labels["enhancing"]) for _, c in pairs],
                    [c.brain for _, c in pairs],
                    np.random.default_rng(seed),
                )
            except ValueError as exc:
                calibration = DEFAULT_CALIBRATION
                out["translation_calibration_note"] = f"{exc}; the default {DEFAULT_CALIBRATION} is used"
            out["translation_calibration"] = list(calibration)
            for p, z in zip(probs, zs, strict=True):
                p["enhancing"] = enhancement_probability(z, calibration)
            scored.insert(0, "enhancing")
    for head in scored:
        labelled = [(c, p[head]) for c, p in zip(cases, probs, strict=True) if c.labels.get(head) is not None]
        if not labelled:
            continue
        in_brain = [np.where(c.brain, p, 0.0) for c, p in labelled]
        f1s = []  # (volume, threshold)
        for min_mm3 in MIN_LESION_MM3:
            # One FROC pass per case and volume labels the prediction at every threshold.
            counts = [froc_counts(q, c.labels[head], c.spacing_mm, rule, THRESHOLDS, min_pred_mm3=min_mm3)  # type: ignore[arg-type]
                      for (c, _), q in zip(labelled, in_brain, strict=True)]  # fmt: skip
            n_ref = sum(k.n_ref for k in counts)
            detected, predicted, false_pos = (np.sum([getattr(k, a) for k in counts], axis=0)
                                              for a in ("detected", "predicted", "false_positives"))  # fmt: skip
            f1s.append([lesion_f1(rule.name, n_ref, int(n), int(d), int(n - f))
                        for d, n, f in zip(detected, predicted, false_pos, strict=True)])  # fmt: skip
        v, best = np.unravel_index(int(np.argmax(f1s)), (len(MIN_LESION_MM3), len(THRESHOLDS)))
        out[f"{head}_f1"] = f1s[v][best]
        out[f"{head}_threshold"] = THRESHOLDS[best]
        out[f"{head}_min_lesion_mm3"] = MIN_LESION_MM3[v]
        if head == "enhancing":
            active = [int(k.n_ref > 0) for k in counts]  # the reference is the same at every volume
            min_mm3 = max(rule.min_volume_mm3, MIN_LESION_MM3[v])
            candidates, fitted = patient_scores(in_brain, labelled, THRESHOLDS[best], min_mm3, rule)
            out.update(choose_patient_score(active, candidates))
            if fitted is not None:
                out["lesion_calibration_slope"], out["lesion_calibration_intercept"] = fitted
    key = "enhancing" if "enhancing_f1" in out else scored[-1] if scored else "none"
    auc = out.get("enhancing_auc", math.nan)
    out["score"] = out.get(f"{key}_f1", 0.0) + 0.01 * (0.0 if math.isnan(auc) else auc)
    out["threshold"] = out.get(f"{key}_threshold", 0.5)
    out["min_lesion_mm3"] = out.get("enhancing_min_lesion_mm3", 0.0)
    return out


def patient_scores(
    probs: Sequence[np.ndarray], labelled: Sequence[tuple[ArrayCase, np.ndarray]], threshold: float, min_mm3: float,
    rule: DetectionRule, head: str = "enhancing",
) -> tuple[dict[str, list[float]], tuple[float, float] | None]:  # fmt: skip
    """Each case's patient scores of :data:`gdfree.metrics.patient.PROBABILITY_SCORES` from its in-brain
    probability map, lesions being the components of ``threshold`` and more kept by ``rule``'s connectivity
    above ``min_mm3`` (as :class:`gdfree.infer.model.TrainedModel` forms them), and the lesion calibration fitted
    on these lesions, true or false by ``rule`` against the ``head`` label (None when they are all one kind;
    ``top_lesion_calibrated`` is then left out)."""
    maxima, true, labels = [], [], []
    for q, (c, _) in zip(probs, labelled, strict=True):
        lab, _n = label_lesions(q >= threshold, c.spacing_mm, rule.connectivity, min_mm3)
        labels.append(lab)
        maxima.append(lesion_maxima(q, lab))
        true.append(match_lesions(lab > 0, np.asarray(c.labels[head]), c.spacing_mm, rule).pred_true)
    calibration = fit_lesion_calibration(np.concatenate(maxima), np.concatenate(true)) if maxima else None
    names = [n for n in PROBABILITY_SCORES if calibration is not None or n != "top_lesion_calibrated"]
    out = {n: [probability_score(n, q, lab, calibration) for q, lab in zip(probs, labels, strict=True)] for n in names}
    return out, calibration


def choose_patient_score(active: Sequence[int], scores: dict[str, list[float]]) -> dict[str, Any]:
    """The patient score with the highest validation AUC (rounded to 0.01), ties to the better-calibrated one
    (lower Brier score of the score read as the probability of activity), among those whose threshold
    (:func:`patient_threshold`) lies in (0.01, 0.99): a threshold at the end of the scale means the score
    saturates (``max_prob`` when none qualifies). Returns its AUC (``enhancing_auc``), name, threshold and every
    candidate's AUC, Brier score and threshold (``patient_auc_<name>``, ``patient_brier_<name>``,
    ``patient_threshold_<name>``)."""
    y = np.asarray(active, float)
    table = {name: {"auc": roc_auc(active, s), "brier": float(np.mean((np.asarray(s) - y) ** 2)),
                    "threshold": patient_threshold(active, s)} for name, s in scores.items()}  # fmt: skip

    def rank(name: str) -> tuple[float, float]:
        auc = table[name]["auc"]
        return (-round(auc, 2) if auc is not None and not math.isnan(auc) else 0.0, table[name]["brier"] or 0.0)

    usable = [n for n, row in table.items() if row["threshold"] is not None and 0.01 < row["threshold"] < 0.99]
    chosen = min(usable, key=rank) if usable else "max_prob"
    return {"enhancing_auc": table[chosen]["auc"], "patient_score": chosen,
            "patient_threshold": table[chosen]["threshold"],
            **{f"patient_{k}_{name}": v for name, row in table.items() for k, v in row.items()}}  # fmt: skip


def patient_threshold(active: Sequence[int], scores: Sequence[float]) -> float | None:
    """The patient score threshold (an exam is active when its score is >= it) with
    the highest Youden J (sensitivity + specificity - 1) on validation patients; ties go to the highest
    threshold (fewer false alarms). None when the patients are all active or all inactive."""
    y = np.asarray(active, bool)
    s = np.asarray(scores, float)
    if y.all() or not y.any():
        return None
    best, chosen = -np.inf, None
    for t in np.unique(s):
        call = s >= t
        j = call[y].mean() + (~call[~y]).mean() - 1
        if j >= best:
            best, chosen = j, float(t)
    return chosen


def fit_temperatures(
    model: torch.nn.Module,
    cases: list[ArrayCase],
    heads: Sequence[str],
    device: str,
    seed: int = 0,
    max_voxels: int = 2_000_000,
) -> tuple[dict[str, float], dict[str, str]]:
    """One temperature per head fitted on the cases' brain voxels (a seeded uniform sample of at most
    ``max_voxels``); a head whose labels are missing or hold one class only is left out, with a note."""
    from gdfree.uncertainty import fit_temperature

    model.eval()
    logits = [predict_volume(model, c.image, device, logits_only=True) for c in cases]
    rng = np.random.default_rng(seed)
    temps, notes = {}, {}
    for h, head in enumerate(heads):
        if head == TRANSLATION_HEAD:
            continue
        pairs = [(z[h][c.brain], np.asarray(c.labels[head])[c.brain]) for c, z in zip(cases, logits, strict=True)
                 if c.labels.get(head) is not None]  # fmt: skip
        if not pairs:
            notes[head] = "no validation case has this label"
            continue
        z = np.concatenate([a for a, _ in pairs])
        y = np.concatenate([b for _, b in pairs])
        if z.size > max_voxels:
            keep = rng.choice(z.size, max_voxels, replace=False)
            z, y = z[keep], y[keep]
        if y.all() or not y.any():
            notes[head] = "validation labels hold one class only"
            continue
        temps[head] = fit_temperature(z, y)
    return temps, notes


def calibrate(run_dir: Path, cases: list[ArrayCase], heads: tuple[str, ...], device: str, seed: int = 0) -> None:
    """Fit the kept model's temperatures on the validation cases and store them in ``model.json``; a head
    without usable labels keeps temperature 1 (``temperature_notes`` says why). Each head's threshold
    (``thresholds``) stays as chosen on the uncalibrated scale; :class:`gdfree.infer.model.TrainedModel`
    maps it onto the calibrated one, so masks do not change."""
    model, _ = load_model(run_dir, device)
    temps, notes = fit_temperatures(model, cases, heads, device, seed)
    record = ModelRecord.read(run_dir / "model.json")
    temperature = {h: temps.get(h, 1.0) for h in heads if h != TRANSLATION_HEAD}
    record.updated(temperature=temperature, temperature_notes=notes).write(run_dir / "model.json")
