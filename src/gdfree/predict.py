"""Predict enhancing (and all-lesion) probabilities for new exams and write them as BIDS derivatives.

Per case, on the input grid (same affine and shape as the inputs), under ``OUT/sub-X/[ses-Y/]anat/``:
``desc-<head>_probseg.nii.gz`` (float32 probabilities), ``desc-<head>_mask.nii.gz`` (uint8, probability
>= the model's threshold chosen on validation; the enhancing mask then drops its components of the model's
``min_lesion_mm3`` or less, chosen on validation with the threshold), and ``_lesions.tsv`` (one row a
predicted enhancing lesion: id, centroid in mm, volume in mm3, maximum and mean probability).
Each mask and the ``desc-all_dseg`` of the visible lesions (with ``activity``) get colour tables beside them
(``.tsv``, ``.itksnap.txt``, ``.lut``, ``.ctbl``; :mod:`gdfree.io.colours`): the lesions called active in red.
A model with a ``t1gd`` output also writes ``desc-synthT1gd_T1w.nii.gz``, the synthetic post-Gd T1w in the
input T1w's intensity scale. ``OUT/predictions.tsv`` has one row a case with its activity score;
``OUT/dataset_description.json`` names the model and its hash.

A cohort goes on past a case that fails (unreadable file, NaN voxels, missing modality): the reason goes
to ``OUT/failures.tsv`` and the other cases are predicted. ``OUT/gdfree_run.json`` (see
:mod:`gdfree.io.runs`) records the model's hash, the options and each finished case's input and output
hashes: a rerun skips the finished cases and redoes the failed ones, ``predictions.tsv`` lists every case
predicted into the folder, and a folder made by another model or other options is refused unless
``overwrite``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import gdfree
from gdfree.arrays import label_components, spacing_from_affine
from gdfree.data.cases import ArrayCase, file_fingerprints, load_array_case
from gdfree.errors import GdfreeError
from gdfree.infer.model import TrainedModel
from gdfree.infer.onnx import ENGINES
from gdfree.io.bids import CaseFiles, dataset_description, derivative_path
from gdfree.io.cohort import CaseDone, run_cohort, select
from gdfree.io.colours import lesion_labels, mask_labels, write_colour_tables
from gdfree.io.images import write_volume
from gdfree.io.runs import RunManifest, check_output_folder, write_failures
from gdfree.io.tables import write_json, write_tsv
from gdfree.metrics.lesions import DetectionRule
from gdfree.models.forward import predict_volume
from gdfree.types import Volume
from gdfree.uncertainty.measures import VOXEL_MEASURES

__all__ = ["lesion_rows", "predict_case", "predict_dataset", "predict_volume", "select_cases"]


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
    with its own temperatures), the probability is the mean of the samples and the result also holds
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
                             mc_layers=mc_layers)  # fmt: skip
        prob = stack.mean(axis=0)
    else:
        prob, synth = model.predict(case.image, device, case.brain)
    if not np.isfinite(prob).all():
        raise GdfreeError(f"{case.case_id}: the network's output holds NaN or infinite values; no prediction made")
    probs = {h: np.where(case.brain, prob[i], 0.0).astype(np.float32) for i, h in enumerate(heads)}
    masks = model.masks(probs, case.spacing_mm)
    rule = model.rule
    rows = lesion_rows(probs["enhancing"], masks["enhancing"], case.affine, rule) if "enhancing" in probs else []
    score = float(probs["enhancing"].max()) if "enhancing" in probs else math.nan
    result: dict[str, Any] = {"prob": probs, "mask": masks, "lesions": rows, "activity_score": score}
    if synth is not None:
        if not np.isfinite(synth).all():
            raise GdfreeError(f"{case.case_id}: the synthetic post-Gd T1w holds NaN or infinite values")
        result["synth"] = np.where(case.brain, synth, 0.0).astype(np.float32)
    if sampled:
        uncertainty = {}
        for i, h in enumerate(heads):
            voxel = voxel_uncertainty(np.where(case.brain, stack[:, i], 0.0))
            uncertainty[h] = {k: v for k, v in voxel.items() if k != "mean"}
        result["uncertainty"] = uncertainty
        result["n_samples"] = int(stack.shape[0])
        if "enhancing" in probs:
            e = heads.index("enhancing")
            labels, _ = label_components(masks["enhancing"], case.spacing_mm, rule.connectivity, rule.min_volume_mm3)
            for row, extra in zip(rows, lesion_uncertainty(np.where(case.brain, stack[:, e], 0.0), labels,
                                                           model.thresholds["enhancing"],
                                                           connectivity=rule.connectivity), strict=True):  # fmt: skip
                row.update({k: v for k, v in extra.items() if k != "lesion_id"})
            result["patient_uncertainty"] = patient_uncertainty([float(s[case.brain].max()) for s in stack[:, e]])
    return result


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


def dataset_root(input_path: Path | str) -> Path:
    """The dataset folder of ``input_path`` (a dataset, or a sub-X or sub-X/ses-Y folder inside one)."""
    path = Path(input_path)
    if path.name.startswith("ses-") and path.parent.name.startswith("sub-"):
        return path.parent.parent
    return path.parent if path.name.startswith("sub-") else path


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
    overwrite: bool = False,
    activity: Path | str | None = None,
    engine: str = "torch",
    shard: tuple[int, int] | None = None,
    mc_layers: str = "all",
) -> list[dict[str, Any]]:
    """Predict every case of ``input_path`` (or those named in ``case_ids``) with the model in ``run_dir``;
    write the outputs into ``out`` and return this run's rows (``predictions.tsv`` holds every case predicted
    into ``out`` with this model and options). A case that fails is reported in ``out/failures.tsv`` and in
    its row (``status`` "failed", ``reason``); the others go on.

    ``ensemble`` (more run folders with the same heads, inputs and normalisation), ``mc`` (MC dropout passes)
    and ``flips`` (test-time mirroring) sample the prediction: the probability is then the samples' mean,
    and ``desc-<head><Measure>_uncertainty.nii.gz`` maps, lesion uncertainty columns and the spread of the
    activity score are written too.

    ``mc_layers`` ``last`` samples only the network's last dropout layer (about the cost of one pass; see
    :func:`gdfree.infer.sampling.sample_predictions`).

    ``shard`` (K, N) predicts only the cases of part K of N (:func:`gdfree.io.runs.select_shard`); N processes
    with the same model and options may write into one ``out`` at once, and together make exactly the files of
    one unsharded run (``predictions.tsv`` and ``failures.tsv`` are rebuilt from every case's record when a
    shard ends).

    ``engine`` ``onnx`` runs the networks through ONNX Runtime (:class:`gdfree.infer.onnx.OnnxNetwork`; CPU,
    deterministic passes and flips, not MC dropout).

    ``activity`` (a folder of :class:`gdfree.activity.ActivityClassifier`) scores every visible lesion: those of
    the case's reference lesion mask when the dataset has one, else those of the lesion head's mask. Each gets
    ``p_active`` in ``desc-all_lesions.tsv`` (ids in ``desc-all_dseg.nii.gz``); an enhancing lesion of
    ``_lesions.tsv`` gets the highest ``p_active`` of the visible lesions it overlaps.

    Raises:
        ValueError: a case's input files are identical to those of a training or validation case of the
            model (unless ``allow_training_cases``; checked for every case before anything is written), a
            bad model or option, ``out`` overlaps the input or holds another run's outputs (unless
            ``overwrite``), no case found.
    """
    if mc < 0:
        raise ValueError(f"mc: expected 0 or more MC dropout passes, got {mc}")
    if mc_layers not in ("all", "last"):
        raise ValueError(f"mc_layers: expected all or last, got {mc_layers!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "onnx" and (mc or str(device) != "cpu"):
        raise ValueError("engine onnx: CPU only and without --mc (ONNX Runtime removes dropout); use --engine torch")
    out = check_output_folder(out, [dataset_root(input_path), run_dir, *ensemble])
    model = _with_engine(TrainedModel.load(run_dir, device), engine)
    model.refuse_control()
    scorer = None
    if activity is not None:
        from gdfree.activity import ActivityClassifier

        scorer = ActivityClassifier.load(activity)
        scorer.check_network(model if scorer.network_sha256 else None)
        if tuple(scorer.modalities) != tuple(model.modalities):
            raise ValueError(f"{activity}: the activity classifier's inputs {list(scorer.modalities)} differ from "
                             f"the model's {list(model.modalities)}")  # fmt: skip
    members = []
    for other in ensemble:
        member = _with_engine(TrainedModel.load(other, device), engine)
        member.refuse_control()
        model.check_member(member)
        members.append(member)
    cases = select(select_cases(input_path, fmt), case_ids, shard, where=str(input_path))

    def fingerprint(files: CaseFiles) -> tuple[str, ...]:
        missing = files.missing(model.modalities)
        if missing:
            raise ValueError(f"missing {', '.join(missing)} needed by the model")
        return file_fingerprints([files.images[m] for m in model.modalities])

    def refuse(files: CaseFiles, inputs: tuple[str, ...]) -> None:
        if not allow_training_cases:
            for m in (model, *members):
                m.refuse_if_seen(files.case_id, inputs)
            if scorer is not None:
                scorer.refuse_if_seen(files.case_id, inputs)

    def work(files: CaseFiles, inputs: tuple[str, ...]) -> CaseDone:
        return _predict_one(model, members, files, out, device, mc=mc, flips=flips, seed=seed, inputs=inputs,
                            scorer=scorer, mc_layers=mc_layers)  # fmt: skip

    identity = {"command": "predict", "models": [m.weights_sha256 for m in (model, *members)],
                **({"activity": scorer.meta["model_sha256"]} if scorer is not None else {}),
                "mc": mc, "flips": flips, "seed": seed if mc else None,
                **({"mc_layers": mc_layers} if mc and mc_layers != "all" else {}),
                **({"engine": engine} if engine != "torch" else {})}  # fmt: skip
    done = 0

    def tell(case_id: str, status: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, len(cases))

    result = run_cohort(cases, out, identity, fingerprint=fingerprint, work=work, refuse=refuse,
                        overwrite=overwrite, progress=tell)  # fmt: skip
    manifest, rows = result.manifest, result.rows
    _write_tables(out, manifest)
    write_json(out / "dataset_description.json", dataset_description(
        "gdfree predictions", "derivative",
        GeneratedBy=[{
            "Name": "gdfree", "Version": gdfree.__version__,
            "Description": f"model {model.folder.resolve()} (weights sha256 {model.weights_sha256}), "
                           f"thresholds {dict(model.thresholds)}, inputs {', '.join(model.modalities)}"
                           + (f"; {len(members)} more ensemble members" if members else "")
                           + (f"; {mc} MC dropout passes" + (" (last dropout layer)" if mc_layers == "last" else "")
                              if mc else "") + ("; test-time flips" if flips else ""),
        }],
        GeneratedAt=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    ))  # fmt: skip
    return rows


def _write_tables(out: Path, manifest: RunManifest) -> None:
    """``predictions.tsv`` and ``failures.tsv`` from every case's record (any shard's); written again while a
    shard sharing the folder records a case meanwhile, so the last one to finish leaves complete tables."""
    while True:
        cases, failures = manifest.cases, manifest.failures()
        write_failures(out, failures)
        all_rows = [entry["row"] for _, entry in sorted(cases.items())]
        write_tsv(out / "predictions.tsv", all_rows, _PREDICTION_COLUMNS + sorted(
            {k for r in all_rows for k in r} - set(_PREDICTION_COLUMNS)))  # fmt: skip
        if manifest.cases == cases and manifest.failures() == failures:
            return


def _with_engine(model: TrainedModel, engine: str) -> TrainedModel:
    """The model with its network on ``engine`` (``torch``: unchanged)."""
    if engine == "torch":
        return model
    from dataclasses import replace

    from gdfree.infer.onnx import OnnxNetwork

    return replace(model, network=OnnxNetwork(model.network, len(model.modalities)))  # type: ignore[arg-type]


_PREDICTION_COLUMNS = ["case_id", "activity_score", "n_enhancing_lesions", "predicted_active",
                       "max_lesion_probability"]  # fmt: skip


def _predict_one(
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
    case = load_array_case(files, model.modalities, ("lesion",) if scorer is not None else (), oracle=model.oracle)
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
        extra = _score_lesions(scorer, case, result, files, model.lesion_rule())
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
        "predicted_active": bool(result["lesions"]),
        "max_lesion_probability": max((r["probability"] for r in result["lesions"]), default=0.0),
        **({"n_samples": result["n_samples"], **result["patient_uncertainty"]} if "n_samples" in result else {}),
        **extra,
    }
    return CaseDone(row, written)


_ALL_LESION_COLUMNS = ("lesion_id", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "volume_mm3", "source",
                       "p_active", "predicted_active")  # fmt: skip


def _score_lesions(
    scorer: Any, case: ArrayCase, result: dict[str, Any], files: CaseFiles, rule: DetectionRule
) -> dict[str, Any]:
    """``p_active`` of every visible lesion (reference mask, else the lesion head's); adds it to the enhancing
    lesion rows of ``result`` (formed under ``rule``) and returns the all-lesion rows, the id map and the
    case's summary columns."""
    from gdfree.activity.features import label_case_lesions, lesion_features

    if case.labels.get("lesion") is not None:
        lesion, source = case.labels["lesion"], "reference"
    elif "lesion" in result["mask"]:
        lesion, source = result["mask"]["lesion"], "predicted"
    else:
        raise GdfreeError(f"{files.case_id}: no lesion mask to score (the dataset has none and the model has no "
                          "lesion head)")  # fmt: skip
    probs = {h: result["prob"][h] for h in scorer.network_heads}
    min_mm3 = float(scorer.meta["config"]["min_volume_mm3"])
    ids, n = label_case_lesions(lesion, case.spacing_mm, min_mm3)
    p = scorer.p_active(lesion_features(case.image, ids, n, case.spacing_mm, probs or None))
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
