"""Predict enhancing (and all-lesion) probabilities for new exams and write them as BIDS derivatives.

Per case, on the input grid (same affine and shape as the inputs), under ``OUT/sub-X/[ses-Y/]anat/``:
``desc-<head>_probseg.nii.gz`` (float32 probabilities), ``desc-<head>_mask.nii.gz`` (uint8, probability
>= the model's threshold chosen on validation; the enhancing mask then drops its components of the model's
``min_lesion_mm3`` or less, chosen on validation with the threshold), and ``_lesions.tsv`` (one row a
predicted enhancing lesion: id, centroid in mm, volume in mm3, maximum and mean probability).
Each mask and the ``desc-all_dseg`` of the visible lesions (with ``activity``) get colour tables beside them
(``.tsv``, ``.itksnap.txt``, ``.lut``, ``.ctbl``; :mod:`gdfree.io.colours`): the lesions called active in red.
A model with a ``t1gd`` output also writes ``desc-synthT1gd_T1w.nii.gz``, the synthetic post-Gd T1w in the
input T1w's intensity scale. ``OUT/predictions.tsv`` has one row a case with its activity score (the model's
patient score, :data:`gdfree.metrics.patient.PROBABILITY_SCORES`) and ``predicted_active`` (the score at or above
the model's patient threshold; any predicted enhancing lesion for a model without one);
``OUT/dataset_description.json`` names the model and its hash.

A cohort goes on past a case that fails (unreadable file, NaN voxels, missing modality): the reason goes
to ``OUT/failures.tsv`` and the other cases are predicted. ``OUT/gdfree_run.json`` (see
:mod:`gdfree.io.runs`) records the model's hash, the options and each finished case's input and output
hashes: a rerun skips the finished cases and redoes the failed ones, ``predictions.tsv`` lists every case
predicted into the folder, and a folder made by another model or other options is refused unless
``overwrite``.

Options of :func:`predict_dataset`:

``ensemble`` (more run folders with the same heads, inputs and normalisation), ``mc`` (MC dropout passes)
and ``flips`` (test-time mirroring) sample the prediction: the probability is then the samples' mean (an
ensemble thresholds it at the mean of its members' thresholds: :meth:`TrainedModel.with_members`), and
``desc-<head><Measure>_uncertainty.nii.gz`` maps, lesion uncertainty columns and the spread of the activity
score are written too.

``mc_layers`` ``last`` samples only the network's last dropout layer (about the cost of one pass; see
:func:`gdfree.infer.sampling.sample_predictions`).

``shard`` (K, N) predicts only the cases of part K of N (:func:`gdfree.io.runs.select_shard`); N processes
with the same model and options may write into one ``out`` at once, and together make exactly the files of
one unsharded run (``predictions.tsv`` and ``failures.tsv`` are rebuilt from every case's record when a
shard ends).

``engine`` ``onnx`` runs the networks through ONNX Runtime (:class:`gdfree.infer.onnx.OnnxNetwork`; CPU,
deterministic passes and flips, not MC dropout).

``precision`` ``bf16`` (or ``auto`` on a CPU or GPU with native bfloat16) runs the deterministic pass under
bfloat16 autocast with channels-last tensors (:func:`gdfree.models.forward.predict_volume`); ``fp32-cl`` (``auto``
on a CPU without it) runs it in float32 in channels-last layout, norms included
(:func:`gdfree.models.forward.channels_last_network`). Probabilities, thresholds and everything written stay
float32. MC dropout, flips and ensembles run in float32.

``activity`` (a folder of :class:`gdfree.activity.ActivityClassifier`) scores every visible lesion: those of
the case's reference lesion mask when the dataset has one, else those of the lesion head's mask. Each gets
``p_active`` in ``desc-all_lesions.tsv`` (ids in ``desc-all_dseg.nii.gz``); an enhancing lesion of
``_lesions.tsv`` gets the highest ``p_active`` of the visible lesions it overlaps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gdfree
from gdfree.data.cases import NORMALISATION, file_fingerprints
from gdfree.devices import check_precision
from gdfree.infer.model import TrainedModel
from gdfree.infer.onnx import ENGINES
from gdfree.io.bids import CaseFiles, attach_pairs, dataset_description
from gdfree.io.cohort import CaseDone, run_cohort, select
from gdfree.io.runs import RunManifest, check_output_folder, write_failures
from gdfree.io.tables import write_json, write_tsv
from gdfree.models.forward import predict_volume
from gdfree.predict.case import PREDICTION_COLUMNS, lesion_rows, predict_case, predict_one
from gdfree.types import exam_roles

__all__ = ["lesion_rows", "predict_case", "predict_dataset", "predict_volume", "select_cases"]


def select_cases(input_path: Path | str, fmt: str = "auto") -> list[CaseFiles]:
    """The cases of a dataset folder, or of one subject/session folder inside a BIDS dataset."""
    from gdfree.io.adapters import discover

    path = Path(input_path)
    if path.name.lower().startswith("ses-") and path.parent.name.lower().startswith("sub-"):
        sub, ses = path.parent.name[4:], path.name[4:]
        cases = [c for c in discover(path.parent.parent, fmt) if c.subject == sub and c.session == ses]
    elif path.name.lower().startswith("sub-"):
        sub = path.name[4:]
        cases = [c for c in discover(path.parent, fmt) if c.subject == sub]
    else:
        cases = discover(path, fmt)
    if not cases:
        from gdfree.io.accounting import not_cases

        root = dataset_root(path)
        rel = "" if root == path else path.resolve().relative_to(root.resolve()).as_posix()
        why = [f"{n.path}: {n.reason}" for n in not_cases(root, fmt) if not rel or n.path == rel
               or n.path.startswith(rel + "/")]  # fmt: skip
        raise ValueError(f"{path}: no case found to predict" + (" (" + "; ".join(why[:5]) + ")" if why else ""))
    return cases


def dataset_root(input_path: Path | str) -> Path:
    """The dataset folder of ``input_path`` (a dataset, or a sub-X or sub-X/ses-Y folder inside one)."""
    path = Path(input_path)
    if path.name.lower().startswith("ses-") and path.parent.name.lower().startswith("sub-"):
        return path.parent.parent
    return path.parent if path.name.lower().startswith("sub-") else path


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
    precision: str = "fp32",
    pairs: Path | str | None = None,
) -> list[dict[str, Any]]:
    """Predict every case of ``input_path`` (or those named in ``case_ids``) with the model in ``run_dir``;
    write the outputs into ``out`` and return this run's rows (``predictions.tsv`` holds every case predicted
    into ``out`` with this model and options). A case that fails is reported in ``out/failures.tsv`` and in
    its row (``status`` "failed", ``reason``); the others go on.

    The options (sampling, ``mc_layers``, ``shard``, ``engine``, ``activity``, ``precision``) are described in the
    module docstring. ``pairs``: the folder of prior-exam images (:mod:`gdfree.preprocess.pair_files`) a model with
    prior-exam channels reads for the follow-ups that have them; every other case reads "no prior".

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
    model, members, scorer = _load_models(run_dir, ensemble, activity, device, engine, precision)
    cases = select(select_cases(input_path, fmt), case_ids, shard, where=str(input_path))
    if pairs is not None:
        cases = attach_pairs(cases, pairs)

    def fingerprint(files: CaseFiles) -> tuple[str, ...]:
        missing = files.missing(exam_roles(model.modalities))
        if missing:
            raise ValueError(f"missing {', '.join(missing)} needed by the model")
        return file_fingerprints(files.input_paths(model.modalities))

    def refuse(files: CaseFiles, inputs: tuple[str, ...]) -> None:
        if not allow_training_cases:
            for m in (model, *members):
                m.refuse_if_seen(files.case_id, inputs)
            if scorer is not None:
                scorer.refuse_if_seen(files.case_id, inputs)

    def work(files: CaseFiles, inputs: tuple[str, ...]) -> CaseDone:
        return predict_one(model, members, files, out, device, mc=mc, flips=flips, seed=seed, inputs=inputs,
                            scorer=scorer, mc_layers=mc_layers)  # fmt: skip

    identity = {"command": "predict", "models": [m.weights_sha256 for m in (model, *members)],
                **({"activity": scorer.meta["model_sha256"]} if scorer is not None else {}),
                "mc": mc, "flips": flips, "seed": seed if mc else None,
                **({"mc_layers": mc_layers} if mc and mc_layers != "all" else {}),
                **({"engine": engine} if engine != "torch" else {}),
                **({"precision": model.precision} if model.precision != "fp32" else {})}  # fmt: skip
    count = iter(range(1, len(cases) + 1))
    result = run_cohort(cases, out, identity, fingerprint=fingerprint, work=work, refuse=refuse, overwrite=overwrite,
                        progress=(lambda *_: progress(next(count), len(cases))) if progress else None)  # fmt: skip
    _write_tables(out, result.manifest)
    write_json(out / "dataset_description.json", _description(model, members, mc, mc_layers, flips))
    return result.rows


def _load_models(
    run_dir: Path | str, ensemble: Sequence[Path | str], activity: Path | str | None, device: str, engine: str,
    precision: str,
) -> tuple[TrainedModel, list[TrainedModel], Any]:  # fmt: skip
    """The model (at ``precision``), its ensemble members (checked against it) and the activity classifier (or
    None), verified."""
    chosen = check_precision(precision, device) if engine == "torch" or precision != "auto" else "fp32"
    if chosen != "fp32" and engine != "torch":
        raise ValueError(f"--precision {precision}: {chosen} runs in torch only; use --engine torch, or fp32")
    model = replace(_with_engine(TrainedModel.load(run_dir, device), engine), precision=chosen)
    model.refuse_control()
    scorer = None
    if activity is not None:
        from gdfree.activity import ActivityClassifier

        scorer = ActivityClassifier.load(activity)
        scorer.check_network(model if scorer.network_sha256 else None)
        if tuple(scorer.modalities) != tuple(model.modalities):
            raise ValueError(f"{activity}: the activity classifier's inputs {list(scorer.modalities)} differ from "
                             f"the model's {list(model.modalities)}")  # fmt: skip
        fitted = scorer.meta.get("normalisation", NORMALISATION)
        if fitted != model.normalisation:
            raise ValueError(f"{activity}: the activity classifier was fitted on {fitted} inputs; the model "
                             f"normalises by {model.normalisation}")  # fmt: skip
    members = []
    for other in ensemble:
        member = _with_engine(TrainedModel.load(other, device), engine)
        member.refuse_control()
        members.append(member)
    return model.with_members(members), members, scorer


def _description(model: TrainedModel, members: Sequence[TrainedModel], mc: int, mc_layers: str, flips: bool) -> dict:
    """``dataset_description.json`` of a predictions folder: the model, its hash, thresholds and sampling."""
    sampling = (f"; {len(members)} more ensemble members" if members else "") + (
        (f"; {mc} MC dropout passes" + (" (last dropout layer)" if mc_layers == "last" else "")) if mc else ""
    ) + ("; test-time flips" if flips else "") + (
        f"; network run at its training voxel size {list(model.spacing_mm)} mm, outputs on each exam's grid"
        if model.spacing_mm is not None else "; network run at each exam's voxel size (the model records none)"
    )
    return dataset_description("gdfree predictions", "derivative", GeneratedBy=[{
        "Name": "gdfree", "Version": gdfree.__version__,
        "Description": f"model {model.folder.resolve()} (weights sha256 {model.weights_sha256}), "
                       f"thresholds {dict(model.thresholds)}, inputs {', '.join(model.modalities)}{sampling}",
    }], GeneratedAt=time.strftime("%Y-%m-%dT%H:%M:%S%z"))  # fmt: skip


def _write_tables(out: Path, manifest: RunManifest) -> None:
    """``predictions.tsv`` and ``failures.tsv`` from every case's record (any shard's); written again while a
    shard sharing the folder records a case meanwhile, so the last one to finish leaves complete tables."""
    while True:
        cases, failures = manifest.cases, manifest.failures()
        write_failures(out, failures)
        all_rows = [entry.row for _, entry in sorted(cases.items())]
        write_tsv(out / "predictions.tsv", all_rows, PREDICTION_COLUMNS + sorted(
            {k for r in all_rows for k in r} - set(PREDICTION_COLUMNS)))  # fmt: skip
        if manifest.cases == cases and manifest.failures() == failures:
            return


def _with_engine(model: TrainedModel, engine: str) -> TrainedModel:
    """The model with its network on ``engine`` (``torch``: unchanged)."""
    if engine == "torch":
        return model
    from dataclasses import replace

    from gdfree.infer.onnx import OnnxNetwork

    return replace(model, network=OnnxNetwork(model.network, len(model.modalities)))  # type: ignore[arg-type]


