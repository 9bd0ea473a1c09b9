"""One case: probabilities, masks, lesion tables and uncertainty (:func:`predict_case`, arrays in and out), then
its files (:func:`predict_one`) and the activity of its visible lesions (:func:`score_lesions`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.arrays import label_components, spacing_from_affine
from gdfree.data.cases import ArrayCase, load_array_case
from gdfree.errors import GdfreeError
from gdfree.infer.model import TrainedModel
from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.io.cohort import CaseDone
from gdfree.io.colours import lesion_labels, mask_labels, write_colour_tables
from gdfree.io.images import write_volume
from gdfree.io.tables import write_tsv
from gdfree.metrics.lesions import DetectionRule
from gdfree.metrics.patient import probability_score
from gdfree.types import Volume
from gdfree.uncertainty.measures import VOXEL_MEASURES

__all__ = ["PREDICTION_COLUMNS", "lesion_rows", "predict_case", "predict_one", "score_lesions"]


def lesion_rows(
    prob: np.ndarray, mask: np.ndarray, affine: np.ndarray, rule: DetectionRule | None = None
) -> list[dict[str, Any]]:
    """One row per connected component of ``mask`` (the rule's connectivity and minimum volume).

    Columns: ``lesion_id``, ``centroid_x_mm`` .. ``centroid_z_mm`` (RAS), ``volume_mm3``, ``probability``
    (maximum voxel probability in the lesion), ``mean_probability``.
    """
    rule = rule or DetectionRule.preset("msseg")
    spacing = spacing_from_affine(affine)
    labels, n = label_components(mask, spacing, rule.connectivity, rule.min_volume_mm3)
    if n == 0:
        return []
    from scipy import ndimage

    ids = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(prob), labels, ids)
    peak = ndimage.maximum(prob, labels, ids)
    mean = ndimage.mean(prob, labels, ids)
    centres = np.array(ndimage.center_of_mass(np.ones_like(prob), labels, ids)).reshape(-1, 3)
    mm = centres @ affine[:3, :3].T + affine[:3, 3]
    voxel_mm3 = float(np.prod(spacing))
    return [
        {
            "lesion_id": int(i),
            "centroid_x_mm": round(float(c[0]), 2),
            "centroid_y_mm": round(float(c[1]), 2),
            "centroid_z_mm": round(float(c[2]), 2),
            "volume_mm3": float(s * voxel_mm3),
            "probability": float(p),
            "mean_probability": float(m),
        }
        for i, c, s, p, m in zip(ids, mm, sizes, peak, mean, strict=True)
    ]


def predict_case(
    model: TrainedModel,
    case: ArrayCase,
    device: str = "cpu",
    *,
    members: Sequence[TrainedModel] = (),
    mc: int = 0,
    flips: bool = False,
    seed: int = 0,
    mc_layers: str = "all",
) -> dict[str, Any]:
    """Probabilities, masks, lesion rows and the activity score of one loaded case (and ``synth``, the
    synthetic post-Gd T1w in T1w z units, from a model with a ``t1gd`` output).

    With ``mc`` > 0, ``flips`` or ensemble ``members`` (models with the same heads and inputs, each applied
    with its own temperatures), the probability is what the samples scatter around (their mean; for a network
    with head dropout its deterministic pass, the mean sample logit) and the result also holds
    ``uncertainty`` (head -> voxel measure -> map), lesion-level measures in the lesion rows and the patient
    score's spread.

    Raises:
        GdfreeError: the network's output is not finite (it would otherwise read as "not active").
    """
    from gdfree.uncertainty import lesion_uncertainty, patient_uncertainty, voxel_uncertainty

    heads = list(model.heads)
    sampled = mc > 0 or flips or bool(members)
    synth = None
    if sampled:
        stack = model.sample(case.image, device, members=members, mc=mc, flips=flips, seed=seed, brain=case.brain,
                             mc_layers=mc_layers, spacing_mm=case.spacing_mm, expectation=True)  # fmt: skip
        stack *= case.brain  # in place: 0 outside the brain, as the probabilities below (no copy of the stack)
        prob, stack = stack[-1], stack[:-1]
    else:
        prob, synth = model.predict(case.image, device, case.brain, case.spacing_mm)
    if not np.isfinite(prob).all():
        raise GdfreeError(f"{case.case_id}: the network's output holds NaN or infinite values; no prediction made")
    probs = {h: prob[i] if sampled else np.where(case.brain, prob[i], 0.0).astype(np.float32)  # sampled: 0 outside
             for i, h in enumerate(heads)}  # fmt: skip
    masks = model.masks(probs, case.spacing_mm)
    rule = model.rule
    rows, score, labels = [], math.nan, None
    if "enhancing" in probs:
        rows = lesion_rows(probs["enhancing"], masks["enhancing"], case.affine, rule)
        labels, _ = label_components(masks["enhancing"], case.spacing_mm, rule.connectivity, rule.min_volume_mm3)
        score = probability_score(model.patient_score, probs["enhancing"], labels, model.lesion_calibration)
    # called active at the model's patient threshold (chosen on validation), else for any predicted lesion
    active = bool(rows) if model.patient_threshold is None or math.isnan(score) else score >= model.patient_threshold
    result: dict[str, Any] = {"prob": probs, "mask": masks, "lesions": rows, "activity_score": score,
                              "predicted_active": active}  # fmt: skip
    if synth is not None:
        if not np.isfinite(synth).all():
            raise GdfreeError(f"{case.case_id}: the synthetic post-Gd T1w holds NaN or infinite values")
        result["synth"] = np.where(case.brain, synth, 0.0).astype(np.float32)
    if sampled:
        uncertainty, voxels = {}, {}
        for i, h in enumerate(heads):
            voxels[h] = voxel_uncertainty(stack[:, i])
            uncertainty[h] = {k: v for k, v in voxels[h].items() if k != "mean"}
        result["uncertainty"] = uncertainty
        result["n_samples"] = int(stack.shape[0])
        if labels is not None:
            e = heads.index("enhancing")
            for row, extra in zip(rows, lesion_uncertainty(stack[:, e], labels, model.thresholds["enhancing"],
                                                           voxel=voxels["enhancing"], connectivity=rule.connectivity),
                                   strict=True):  # fmt: skip
                row.update({k: v for k, v in extra.items() if k != "lesion_id"})
            result["patient_uncertainty"] = patient_uncertainty(
                [probability_score(model.patient_score, s, labels, model.lesion_calibration) for s in stack[:, e]])
    return result


PREDICTION_COLUMNS = ["case_id", "activity_score", "n_enhancing_lesions", "predicted_active",
                       "max_lesion_probability"]  # fmt: skip


def predict_one(
    model: TrainedModel,
    members: Sequence[TrainedModel],
    files: CaseFiles,
    out: Path,
    device: str,
    *,
    mc: int,
    flips: bool,
    seed: int,
    inputs: Sequence[str],
    scorer: Any = None,
    mc_layers: str = "all",
) -> CaseDone:
    """Predict one case and write its files; returns its predictions.tsv row and the files written."""
    case = load_array_case(files, model.modalities, ("lesion",) if scorer is not None else (), oracle=model.oracle,
                           normalisation=model.normalisation)  # fmt: skip
    if tuple(case.fingerprints) != tuple(inputs):
        raise GdfreeError(f"{files.case_id}: its input files changed while predicting")
    result = predict_case(model, case, device, members=members, mc=mc, flips=flips, seed=seed, mc_layers=mc_layers)
    ref = Volume(case.brain, case.affine)
    written = []
    for head, maps in result.get("uncertainty", {}).items():
        for measure, data in maps.items():
            desc = head + "".join(w.capitalize() for w in measure.split("_"))
            written.append(write_volume(ref.with_data(data),
                           derivative_path(out, case.subject, case.session, "uncertainty", desc=desc)))  # fmt: skip
    for head in model.heads:
        written.append(write_volume(ref.with_data(result["prob"][head]),
                       derivative_path(out, case.subject, case.session, "probseg", desc=head)))  # fmt: skip
        written.append(write_volume(ref.with_data(result["mask"][head].astype(np.uint8)),
                       derivative_path(out, case.subject, case.session, "mask", desc=head)))  # fmt: skip
        written += write_colour_tables(written[-1], mask_labels(head))
    if "synth" in result and case.raw_stats:  # back in the input T1w's intensity scale
        mean, std = case.raw_stats[list(model.modalities).index("T1w")]
        raw = np.where(case.brain, result["synth"] * std + mean, 0.0).astype(np.float32)
        written.append(write_volume(ref.with_data(raw), derivative_path(out, case.subject, case.session, "T1w",
                                                                        desc="synthT1gd")))  # fmt: skip
    columns = ["lesion_id", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "volume_mm3", "probability",
               "mean_probability"]  # fmt: skip
    if "uncertainty" in result:
        columns += [f"{m}_{k}" for m in VOXEL_MEASURES for k in ("mean", "max")] + ["lsu"]
    extra: dict[str, Any] = {}
    if scorer is not None:
        extra = score_lesions(scorer, case, result, files, model.lesion_rule())
        all_rows = extra.pop("rows")
        written.append(write_volume(ref.with_data(extra.pop("ids").astype(np.uint16)),
                                    derivative_path(out, case.subject, case.session, "dseg", desc="all")))  # fmt: skip
        written += write_colour_tables(written[-1], lesion_labels(all_rows))
        written.append(write_tsv(derivative_path(out, case.subject, case.session, "lesions", ".tsv", desc="all"),
                                 all_rows, list(_ALL_LESION_COLUMNS)))  # fmt: skip
        columns.append("p_active")
    lesion_path = derivative_path(out, case.subject, case.session, "lesions", ".tsv")
    written.append(write_tsv(lesion_path, result["lesions"], columns))
    row = {
        "case_id": case.case_id,
        "activity_score": result["activity_score"],
        "n_enhancing_lesions": len(result["lesions"]),
        "predicted_active": result["predicted_active"],
        "max_lesion_probability": max((r["probability"] for r in result["lesions"]), default=0.0),
        **({"n_samples": result["n_samples"], **result["patient_uncertainty"]} if "n_samples" in result else {}),
        **extra,
    }
    return CaseDone(row, written)


_ALL_LESION_COLUMNS = ("lesion_id", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "volume_mm3", "source",
                       "p_active", "predicted_active")  # fmt: skip


def score_lesions(
    scorer: Any, case: ArrayCase, result: dict[str, Any], files: CaseFiles, rule: DetectionRule
) -> dict[str, Any]:
    """``p_active`` of every visible lesion (reference mask, else the lesion head's); adds it to the enhancing
    lesion rows of ``result`` (formed under ``rule``) and returns the all-lesion rows, the id map and the
    case's summary columns."""
    from gdfree.activity.classifier import feature_image
    from gdfree.activity.features import label_case_lesions, lesion_features

    reference = case.labels.get("lesion")
    if reference is not None:
        lesion, source = reference, "reference"
    elif "lesion" in result["mask"]:
        lesion, source = result["mask"]["lesion"], "predicted"
    else:
        raise GdfreeError(f"{files.case_id}: no lesion mask to score (the dataset has none and the model has no "
                          "lesion head)")  # fmt: skip
    probs = {h: result["prob"][h] for h in scorer.network_heads}
    min_mm3 = float(scorer.meta["config"]["min_volume_mm3"])
    ids, n = label_case_lesions(lesion, case.spacing_mm, min_mm3)
    image = feature_image(case, scorer.modalities, scorer.feature_reference, scorer.meta["normalisation"])
    p = scorer.p_active(lesion_features(image, ids, n, case.spacing_mm, probs or None))
    # lesion_rows labels the same components (the one lesion rule, same minimum volume) in the same order
    rows = lesion_rows(np.zeros(ids.shape, np.float32), ids > 0, case.affine, DetectionRule("msseg", 6, min_mm3))
    all_rows = [{k: r[k] for k in _ALL_LESION_COLUMNS[:5]} | {"source": source, "p_active": float(q),
                "predicted_active": bool(q >= scorer.threshold)} for r, q in zip(rows, p, strict=True)]  # fmt: skip
    lookup = np.concatenate([[0.0], p])
    enh_labels, _ = label_components(result["mask"].get("enhancing", np.zeros_like(lesion)), case.spacing_mm,
                                  rule.connectivity, rule.min_volume_mm3)  # fmt: skip
    for i, row in enumerate(result["lesions"], start=1):
        row["p_active"] = float(lookup[ids[enh_labels == i]].max(initial=0.0))
    return {
        "rows": all_rows,
        "ids": ids,
        "n_lesions": n,
        "n_active_lesions": int((p >= scorer.threshold).sum()),
        "max_p_active": float(p.max(initial=0.0)),
    }
