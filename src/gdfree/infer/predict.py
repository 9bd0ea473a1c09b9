"""Predict enhancing (and all-lesion) probabilities for new exams and write them as BIDS derivatives.

Per case, on the input grid (same affine and shape as the inputs), under ``OUT/sub-X/[ses-Y/]anat/``:
``desc-<head>_probseg.nii.gz`` (float32 probabilities), ``desc-<head>_mask.nii.gz`` (uint8, probability
>= the model's threshold chosen on validation; the enhancing mask then drops its components of the model's
``min_lesion_mm3`` or less, chosen on validation with the threshold), and ``_lesions.tsv`` (one row a
predicted enhancing lesion: id, centroid in mm, volume in mm3, maximum and mean probability).
``OUT/predictions.tsv`` has one row a case with its activity score; ``OUT/dataset_description.json``
names the model and its hash.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import gdfree
from gdfree.data.cases import NORMALISATION, ArrayCase, file_fingerprints, load_array_case
from gdfree.errors import MissingModalityError
from gdfree.evaluate.lesions import DetectionRule, label_lesions
from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.io.images import write_volume
from gdfree.io.tables import write_json, write_tsv
from gdfree.types import Volume
from gdfree.uncertainty.measures import VOXEL_MEASURES

__all__ = ["lesion_rows", "predict_case", "predict_dataset", "predict_volume", "select_cases"]

MAX_WHOLE_VOXELS = 10_000_000
"""Above this many (padded) voxels, inference runs in overlapping tiles with Gaussian blending. A 1 mm MNI
exam pads to 192x224x192 = 8.3 M voxels and runs whole: 2.3 GB peak RSS (measured with the demo model)."""


def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    device: str | torch.device = "cpu",
    *,
    max_whole_voxels: int = MAX_WHOLE_VOXELS,
    tile: int = 128,
    overlap: float = 0.25,
    temperature: float | Sequence[float] = 1.0,
    logits_only: bool = False,
) -> np.ndarray:
    """Sigmoid probabilities of every head for one (C, X, Y, Z) image, shape (H, X, Y, Z) float32.

    ``temperature`` (one value, or one per head) divides the logits first (temperature scaling fitted on
    validation patients); ``logits_only=True`` returns the raw logits instead of probabilities.

    The image is zero-padded to a multiple of the network's divisor; if that fits ``max_whole_voxels`` it
    goes through in one call, else MONAI's sliding window (``tile``^3, ``overlap``, Gaussian blending).
    The model's mode is left as it is (eval for a deterministic prediction, train for an MC dropout sample).
    """
    divisor = int(getattr(model, "divisor", 1))
    shape = image.shape[1:]
    padded = [int(math.ceil(s / divisor) * divisor) for s in shape]
    x = np.zeros((1, image.shape[0], *padded), np.float32)
    x[(0, slice(None), *(slice(0, s) for s in shape))] = image
    tensor = torch.from_numpy(x).to(device)
    with torch.no_grad():
        if math.prod(padded) <= max_whole_voxels:
            logits = model(tensor)
        else:
            from monai.inferers import sliding_window_inference

            roi = tuple(min(tile, p) for p in padded)
            logits = sliding_window_inference(tensor, roi, 1, model, overlap=overlap, mode="gaussian")
    out = logits[0].float()
    if not logits_only:
        temps = torch.as_tensor(np.broadcast_to(np.asarray(temperature, np.float32), (out.shape[0],)).copy())
        out = torch.sigmoid(out / temps.to(out.device).view(-1, 1, 1, 1))
    return out.cpu().numpy()[(slice(None), *(slice(0, s) for s in shape))]


def lesion_rows(
    prob: np.ndarray, mask: np.ndarray, affine: np.ndarray, rule: DetectionRule | None = None
) -> list[dict[str, Any]]:
    """One row per connected component of ``mask`` (the rule's connectivity and minimum volume).

    Columns: ``lesion_id``, ``centroid_x_mm`` .. ``centroid_z_mm`` (RAS), ``volume_mm3``, ``probability``
    (maximum voxel probability in the lesion), ``mean_probability``.
    """
    rule = rule or DetectionRule.preset("msseg")
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    labels, n = label_lesions(mask, spacing, rule.connectivity, rule.min_volume_mm3)
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
    model: nn.Module,
    meta: dict[str, Any],
    case: ArrayCase,
    device: str = "cpu",
    *,
    members: Sequence[nn.Module] = (),
    mc: int = 0,
    flips: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Probabilities, masks, lesion rows and the activity score of one loaded case.

    With ``mc`` > 0, ``flips`` or ensemble ``members`` (models with the same heads and inputs), the
    probability is the mean of the samples and the result also holds ``uncertainty`` (head -> voxel
    measure -> map), lesion-level measures in the lesion rows and the patient score's spread.
    """
    from gdfree.uncertainty import lesion_uncertainty, patient_uncertainty, sample_predictions, voxel_uncertainty

    heads = list(meta["heads"])
    temperature = [float(meta.get("temperature", {}).get(h, 1.0)) for h in heads]
    sampled = mc > 0 or flips or bool(members)
    if sampled:
        stack = sample_predictions([model, *members], case.image, device, mc=mc, flips=flips,
                                   temperature=temperature, seed=seed)  # fmt: skip
        prob = stack.mean(axis=0)
    else:
        prob = predict_volume(model, case.image, device, temperature=temperature)
    # the threshold was chosen on validation before calibration: its calibrated image gives the same masks
    thresholds = {h: float(meta.get("calibrated_thresholds", {}).get(h, meta["threshold"])) for h in heads}
    probs = {h: np.where(case.brain, prob[i], 0.0).astype(np.float32) for i, h in enumerate(heads)}
    masks = {h: p >= thresholds[h] for h, p in probs.items()}
    rule = DetectionRule(**meta.get("rule", {"name": "msseg"}))
    min_mm3 = float(meta.get("min_lesion_mm3", 0.0))
    if min_mm3 > 0 and "enhancing" in masks:
        masks["enhancing"] = label_lesions(masks["enhancing"], case.spacing_mm, rule.connectivity, min_mm3)[0] > 0
    rows = lesion_rows(probs["enhancing"], masks["enhancing"], case.affine, rule) if "enhancing" in probs else []
    score = float(probs["enhancing"].max()) if "enhancing" in probs else math.nan
    result: dict[str, Any] = {"prob": probs, "mask": masks, "lesions": rows, "activity_score": score}
    if sampled:
        uncertainty = {}
        for i, h in enumerate(heads):
            voxel = voxel_uncertainty(np.where(case.brain, stack[:, i], 0.0))
            uncertainty[h] = {k: v for k, v in voxel.items() if k != "mean"}
        result["uncertainty"] = uncertainty
        result["n_samples"] = int(stack.shape[0])
        if "enhancing" in probs:
            e = heads.index("enhancing")
            labels, _ = label_lesions(masks["enhancing"], case.spacing_mm, rule.connectivity, rule.min_volume_mm3)
            for row, extra in zip(rows, lesion_uncertainty(np.where(case.brain, stack[:, e], 0.0), labels,
                                                           thresholds["enhancing"],
                                                           connectivity=rule.connectivity), strict=True):  # fmt: skip
                row.update({k: v for k, v in extra.items() if k != "lesion_id"})
            result["patient_uncertainty"] = patient_uncertainty([float(s[case.brain].max()) for s in stack[:, e]])
    return result


def _refuse_control(run_dir: Path | str, meta: dict[str, Any]) -> None:
    if meta.get("config", {}).get("randomise_labels"):
        raise ValueError(f"{run_dir}: trained with randomise_labels (the control of the attribution sanity checks), "
                         f"not a model to predict with")  # fmt: skip


def select_cases(input_path: Path | str, fmt: str = "auto") -> list[CaseFiles]:
    """The cases of a dataset folder, or of one subject/session folder inside a BIDS dataset."""
    from gdfree.io.adapters import discover

    path = Path(input_path)
    if path.name.startswith("ses-") and path.parent.name.startswith("sub-"):
        sub, ses = path.parent.name[4:], path.name[4:]
        cases = [c for c in discover(path.parent.parent, fmt) if c.subject == sub and c.session == ses]
    elif path.name.startswith("sub-"):
        sub = path.name[4:]
        cases = [c for c in discover(path.parent, fmt) if c.subject == sub]
    else:
        cases = discover(path, fmt)
    if not cases:
        raise ValueError(f"{path}: no case found to predict")
    return cases


def predict_dataset(
    run_dir: Path | str,
    input_path: Path | str,
    out: Path | str,
    *,
    device: str = "cpu",
    fmt: str = "auto",
    allow_training_cases: bool = False,
    case_ids: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    ensemble: Sequence[Path | str] = (),
    mc: int = 0,
    flips: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Predict every case of ``input_path`` (or those named in ``case_ids``) with the model in ``run_dir``;
    write the outputs into ``out``. Every case is checked before anything is written.

    ``ensemble`` (more run folders with the same heads, inputs and normalisation), ``mc`` (MC dropout passes)
    and ``flips`` (test-time mirroring) sample the prediction: the probability is then the samples' mean,
    and ``desc-<head><Measure>_uncertainty.nii.gz`` maps, lesion uncertainty columns and the spread of the
    activity score are written too.

    Raises:
        ValueError: a case's input files are identical to those of a training or validation case of the
            model (unless ``allow_training_cases``), the model's normalisation is unknown, the model was
            trained on randomised labels, no case found.
        MissingModalityError, InputRoleError, GridMismatchError: from reading the cases.
    """
    from gdfree.models.checkpoint import load_model

    model, meta = load_model(run_dir, device)
    _refuse_control(run_dir, meta)
    if meta["normalisation"] != NORMALISATION:
        raise ValueError(f"{run_dir}: normalisation {meta['normalisation']!r} is not {NORMALISATION!r}")
    members = []
    seen = set(meta.get("training_fingerprints", []))
    for other in ensemble:
        member, other_meta = load_model(other, device)
        _refuse_control(other, other_meta)
        for key in ("heads", "modalities", "normalisation", "oracle"):
            if other_meta.get(key) != meta.get(key):
                raise ValueError(f"ensemble member {other}: {key} {other_meta.get(key)} differs from {run_dir}'s "
                                 f"{meta.get(key)}")  # fmt: skip
        members.append(member)
        seen |= set(other_meta.get("training_fingerprints", []))
    cases = select_cases(input_path, fmt)
    if case_ids is not None:
        cases = [c for c in cases if c.case_id in set(case_ids)]
    for files in cases:
        missing = files.missing(meta["modalities"])
        if missing:
            raise MissingModalityError(f"{files.case_id}: missing {', '.join(missing)} needed by the model")
        used = seen.intersection(file_fingerprints([files.images[m] for m in meta["modalities"]]))
        if used and not allow_training_cases:
            raise ValueError(
                f"{files.case_id}: its input files are identical to a training/validation case of this model "
                f"({run_dir}); predicting it would not be a test (pass --allow-training-cases to do it anyway)"
            )
    out = Path(out)
    rows = []
    for i, files in enumerate(cases):
        case = load_array_case(files, meta["modalities"], (), oracle=bool(meta.get("oracle", False)))
        result = predict_case(model, meta, case, device, members=members, mc=mc, flips=flips, seed=seed)
        ref = Volume(case.brain, case.affine)
        for head, maps in result.get("uncertainty", {}).items():
            for measure, data in maps.items():
                desc = head + "".join(w.capitalize() for w in measure.split("_"))
                write_volume(ref.with_data(data),
                             derivative_path(out, case.subject, case.session, "uncertainty", desc=desc))  # fmt: skip
        for head in meta["heads"]:
            write_volume(ref.with_data(result["prob"][head]),
                         derivative_path(out, case.subject, case.session, "probseg", desc=head))  # fmt: skip
            write_volume(ref.with_data(result["mask"][head].astype(np.uint8)),
                         derivative_path(out, case.subject, case.session, "mask", desc=head))  # fmt: skip
        lesion_path = derivative_path(out, case.subject, case.session, "lesions", ".tsv")
        columns = ["lesion_id", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "volume_mm3", "probability",
                   "mean_probability"]  # fmt: skip
        if "uncertainty" in result:
            columns += [f"{m}_{k}" for m in VOXEL_MEASURES for k in ("mean", "max")] + ["lsu"]
        write_tsv(lesion_path, result["lesions"], columns)
        rows.append({
            "case_id": case.case_id,
            "activity_score": result["activity_score"],
            "n_enhancing_lesions": len(result["lesions"]),
            "predicted_active": bool(result["lesions"]),
            "max_lesion_probability": max((r["probability"] for r in result["lesions"]), default=0.0),
            **({"n_samples": result["n_samples"], **result["patient_uncertainty"]} if "n_samples" in result else {}),
        })  # fmt: skip
        if progress:
            progress(i + 1, len(cases))
    write_tsv(out / "predictions.tsv", rows)
    write_json(out / "dataset_description.json", {
        "Name": "gdfree predictions",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "gdfree", "Version": gdfree.__version__,
            "Description": f"model {Path(run_dir).resolve()} (weights sha256 {meta.get('weights_sha256')}), "
                           f"threshold {meta['threshold']}, inputs {', '.join(meta['modalities'])}"
                           + (f"; {len(members)} more ensemble members" if members else "")
                           + (f"; {mc} MC dropout passes" if mc else "") + ("; test-time flips" if flips else ""),
        }],
        "GeneratedAt": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })  # fmt: skip
    return rows
