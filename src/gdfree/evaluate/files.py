"""The file layer of evaluation: find predictions, pair them with a reference dataset, score, write tables.

Predictions are BIDS derivatives as ``gdfree predict`` writes them (any folder depth below ``pred_dir``)::

    sub-X[_ses-Y]_desc-<target>_probseg.nii.gz    voxel probabilities in [0, 1]
    sub-X[_ses-Y]_desc-<target>_mask.nii.gz       binary prediction (else probseg >= threshold)
    sub-X[_ses-Y]_desc-<uncertainty>_*.nii.gz     optional voxel uncertainty (retention curves)
    sub-X[_ses-Y]_desc-synthT1gd_T1w.nii.gz       optional synthetic post-Gd T1w (translation metrics, in the
                                                  T1w's normalised units when the reference has T1w and brain)
    sub-X[_ses-Y]_desc-all_dseg.nii.gz + _desc-all_lesions.tsv
                                                  optional ids and p_active of every visible lesion (lesion-level
                                                  activity metrics when the reference has lesion + enhancing masks)

The reference is any dataset :func:`gdfree.io.adapters.discover` reads; its ``<target>`` mask is the
truth, its brain mask (if any) restricts calibration, retention and translation metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gdfree
from gdfree.arrays import mask_stats, zscore
from gdfree.data.translation import translation_target
from gdfree.errors import GdfreeError, GridMismatchError, MissingModalityError
from gdfree.evaluate.cohort import (
    CaseResult,
    EvaluationConfig,
    evaluate_case,
    result_from_json,
    result_to_json,
    summarize,
)
from gdfree.io.bids import CaseFiles, parse_entities
from gdfree.io.images import image_suffix, read_mask, read_volume
from gdfree.io.tables import write_json, write_tsv
from gdfree.types import POST_CONTRAST, Volume

__all__ = [
    "TARGETS", "PredictionFiles", "check_manifest", "discover_predictions", "evaluate_dataset", "write_evaluation",
]  # fmt: skip

TARGETS = ("enhancing", "lesion")


@dataclass
class PredictionFiles:
    """The prediction files of one case (paths None when absent)."""

    subject: str
    session: str | None
    probseg: Path | None = None
    mask: Path | None = None
    uncertainty: Path | None = None
    synth: Path | None = None
    lesion_ids: Path | None = None

    @property
    def case_id(self) -> str:
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")


def discover_predictions(
    pred_dir: Path | str, target: str = "enhancing", uncertainty_desc: str | None = None
) -> list[PredictionFiles]:
    """Find the prediction files under ``pred_dir`` (see the module docstring).

    Raises:
        FileNotFoundError: ``pred_dir`` is not a folder.
        ValueError: unknown target, two files for one role of a case, or no prediction at all.
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: prediction folder not found")
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
    found: dict[tuple[str, str | None], PredictionFiles] = {}
    for path in sorted(root.rglob("sub-*")):
        ent = parse_entities(path.name) if path.is_file() and image_suffix(path) else None
        if ent is None:
            continue
        desc, suffix = ent.get("desc"), ent["suffix"]
        role = None
        if desc == target and suffix in ("probseg", "mask"):
            role = suffix
        elif uncertainty_desc is not None and desc == uncertainty_desc:
            role = "uncertainty"
        elif desc == "synthT1gd" and suffix == "T1w":
            role = "synth"
        elif desc == "all" and suffix == "dseg":
            role = "lesion_ids"
        if role is None:
            continue
        key = (ent["sub"], ent.get("ses"))
        files = found.setdefault(key, PredictionFiles(*key))
        if getattr(files, role) is not None:
            raise ValueError(f"{files.case_id}: two {role} files, {getattr(files, role)} and {path}")
        setattr(files, role, path)
    usable = [f for f in found.values() if f.probseg or f.mask]
    if not usable:
        raise ValueError(
            f"{root}: no prediction found (expected sub-*_desc-{target}_probseg.nii.gz or _mask.nii.gz files)"
        )
    return sorted(usable, key=lambda f: (f.subject, f.session or ""))


def _first(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _pair(
    preds: list[PredictionFiles], refs: list[CaseFiles], target: str, only_predicted: bool
) -> list[tuple[PredictionFiles, CaseFiles]]:
    by_key = {(c.subject, c.session): c for c in refs}
    stray = [p.case_id for p in preds if (p.subject, p.session) not in by_key]
    if stray:
        raise ValueError(f"predictions without a reference case in the dataset: {_first(stray)}")
    predicted = {(p.subject, p.session) for p in preds}
    missing = [c.case_id for c in refs if (c.subject, c.session) not in predicted and target in c.masks]
    if missing and not only_predicted:
        raise ValueError(
            f"{len(missing)} reference cases have no prediction ({_first(missing)}); "
            "pass only_predicted (--only-predicted) to score the predicted cases alone"
        )
    pairs = []
    for p in preds:
        ref = by_key[(p.subject, p.session)]
        if target not in ref.masks:
            have = ", ".join(sorted(ref.masks)) or "none"
            raise MissingModalityError(f"{ref.case_id}: the reference has no {target} mask (masks found: {have})")
        pairs.append((p, ref))
    return pairs


def _on_grid(path: Path, reference: Volume, mask: bool = False) -> Volume:
    vol = read_mask(path) if mask else read_volume(path)
    if not vol.same_grid(reference):
        raise GridMismatchError(
            f"{path}: grid {vol.shape} spacing {vol.spacing_mm} differs from the reference {reference.path} "
            f"(grid {reference.shape}, spacing {reference.spacing_mm}); predictions must be on the reference grid"
        )
    return vol


def evaluate_dataset(
    pred_dir: Path | str,
    ref_dir: Path | str,
    *,
    target: str = "enhancing",
    config: EvaluationConfig | None = None,
    fmt: str = "auto",
    uncertainty_desc: str | None = None,
    only_predicted: bool = False,
    progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
    out: Path | str | None = None,
) -> tuple[list[CaseResult], dict[str, Any] | None, dict[str, np.ndarray]]:
    """Score every predicted case against the reference dataset.

    With ``shard`` (K, N) only the cases of part K of N are scored (:func:`gdfree.io.runs.select_shard`) and
    each result is recorded in ``out/gdfree_run/<case>.json`` (a rerun skips a case whose prediction and
    reference files are unchanged); the cohort is summarised from every record once every paired case has
    one, by whichever shard completes the set. Until then the summary is None.

    Returns:
        (results, summary, affines): per-case results, the cohort summary (with provenance), and each case's
        affine (for lesion centroids in mm); ([], None, {}) while other shards have cases to score.

    Raises:
        FileNotFoundError, ValueError (with the file or case named), GridMismatchError, MissingModalityError.
    """
    from gdfree.io.adapters import discover

    cfg = config or EvaluationConfig()
    preds = discover_predictions(pred_dir, target, uncertainty_desc)
    check_manifest(Path(pred_dir), preds)
    pairs = _pair(preds, discover(ref_dir, fmt), target, only_predicted)
    if shard is not None:
        if out is None:
            raise ValueError("evaluate --shard: needs the output folder for the per-case records")
        identity = {"command": "evaluate", "predictions": str(Path(pred_dir).resolve()),
                    "reference": str(Path(ref_dir).resolve()), "target": target, "config": cfg.as_dict(),
                    "uncertainty_desc": uncertainty_desc, "only_predicted": only_predicted}  # fmt: skip
        recorded = _evaluate_shard(pairs, shard, Path(out), identity, target, cfg, progress)
        if recorded is None:  # other shards still have cases to score
            return [], None, {}
        results, affines, failures = recorded
    else:
        results, affines, failures = [], {}, {}
        for i, (pred, ref) in enumerate(pairs):
            try:
                result, affine = _evaluate_pair(pred, ref, target, cfg)
            except (GdfreeError, ValueError, OSError) as exc:  # reported per case; the other cases go on
                failures[ref.case_id] = str(exc)
            else:
                results.append(result)
                affines[ref.case_id] = affine
            if progress:
                progress(i + 1, len(pairs))
    if not results:
        raise ValueError(f"{pred_dir}: no case could be scored; " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    return results, _summary(results, cfg, failures, pred_dir, ref_dir, target, uncertainty_desc), affines


def _evaluate_shard(
    pairs: list[tuple[PredictionFiles, CaseFiles]], shard: tuple[int, int], out: Path, identity: dict[str, Any],
    target: str, cfg: EvaluationConfig, progress: Callable[[int, int], None] | None,
) -> tuple[list[CaseResult], dict[str, np.ndarray], dict[str, str]] | None:  # fmt: skip
    """Score part K of N of ``pairs`` through the cohort runner, each result recorded in ``out``; every shard's
    results once all pairs have a record, else None."""
    from gdfree.io.cohort import CaseDone, run_cohort, select

    todo = select(pairs, None, shard, where=str(out), key=lambda p: p[1].case_id)

    def work(pair: tuple[PredictionFiles, CaseFiles], inputs: tuple[str, ...]) -> CaseDone:
        result, affine = _evaluate_pair(*pair, target, cfg)
        return CaseDone({"result": result_to_json(result), "affine": np.asarray(affine).tolist()})

    count = iter(range(1, len(todo) + 1))
    run = run_cohort(todo, out, identity, fingerprint=lambda p: _pair_hashes(*p), work=work,
                     key=lambda p: p[1].case_id,
                     progress=(lambda *_: progress(next(count), len(todo))) if progress else None)  # fmt: skip
    recorded, failures = run.manifest.cases, run.manifest.failures()
    if any(ref.case_id not in recorded and ref.case_id not in failures for _, ref in pairs):
        return None
    done = [ref.case_id for _, ref in pairs if ref.case_id in recorded]
    results = [result_from_json(recorded[c].row["result"]) for c in done]
    return results, {c: np.asarray(recorded[c].row["affine"]) for c in done}, failures


def _summary(
    results: list[CaseResult], cfg: EvaluationConfig, failures: dict[str, str], pred_dir: Path | str,
    ref_dir: Path | str, target: str, uncertainty_desc: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The cohort summary of ``results`` with lesion-level activity (when scored), failures and provenance."""
    summary = summarize(results, cfg)
    scored = [r.activity for r in results if r.activity is not None]
    if scored:  # lesion-level activity; the lesions called active are those with p_active >= the smallest called
        from gdfree.metrics.activity import lesion_activity_summary

        threshold = min((p for _, _, called in scored for p in called), default=math.inf)
        summary["lesion_activity"] = {
            part: lesion_activity_summary([a[i] for a in scored], threshold, cfg.n_boot, cfg.seed)
            for i, part in enumerate(("reference_lesions", "scored_lesions"))
        }
    summary["failures"] = failures
    summary["provenance"] = {
        "gdfree_version": gdfree.__version__,
        "predictions": str(Path(pred_dir).resolve()),
        "reference": str(Path(ref_dir).resolve()),
        "target": target,
        "uncertainty_desc": uncertainty_desc,
        "cases": [r.case_id for r in results],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return summary


def _pair_hashes(pred: PredictionFiles, ref: CaseFiles) -> list[str]:
    """SHA-256 of every file a case's score depends on (its predictions, the reference masks and images)."""
    from gdfree.io.images import file_sha256

    files = [pred.probseg, pred.mask, pred.uncertainty, pred.synth, pred.lesion_ids, *ref.masks.values(),
             *(ref.images.values() if pred.synth else ())]  # fmt: skip
    return [file_sha256(f) if f is not None else "-" for f in files]


def check_manifest(pred_dir: Path, preds: list[PredictionFiles]) -> None:
    """If ``pred_dir`` holds a run manifest (:mod:`gdfree.io.runs`), every prediction file must be one it
    lists, with the same SHA-256: a file left by another run or edited since is refused.

    Raises:
        OutputConflictError: naming the first such file.
    """
    from gdfree.io.images import file_sha256
    from gdfree.io.runs import MANIFEST, OutputConflictError, listed_outputs

    path = pred_dir / MANIFEST
    listed = listed_outputs(pred_dir)
    if listed is None:
        return
    for pred in preds:
        for file in (pred.probseg, pred.mask, pred.uncertainty, pred.synth):
            if file is None:
                continue
            rel = str(file.relative_to(pred_dir))
            if rel not in listed:
                raise OutputConflictError(f"{file}: not an output of the run recorded in {path} (left by another "
                                          "run?); predict into a fresh folder")  # fmt: skip
            if file_sha256(file) != listed[rel]:
                raise OutputConflictError(f"{file}: changed since the run recorded in {path} wrote it")


def _evaluate_pair(
    pred: PredictionFiles, ref: CaseFiles, target: str, cfg: EvaluationConfig
) -> tuple[CaseResult, np.ndarray]:
    truth = read_mask(ref.masks[target])
    brain = _on_grid(ref.masks["brain"], truth, mask=True).data if "brain" in ref.masks else None
    prob = _on_grid(pred.probseg, truth).data if pred.probseg else None
    mask = _on_grid(pred.mask, truth).data if pred.mask else None
    unc = _on_grid(pred.uncertainty, truth).data if pred.uncertainty else None
    synth = target_image = None
    if pred.synth and POST_CONTRAST in ref.images:
        synth = _on_grid(pred.synth, truth).data
        target_image = _on_grid(ref.images[POST_CONTRAST], truth).data
        if "T1w" in ref.images and brain is not None:  # both in the T1w's normalised units (as trained)
            t1 = np.asarray(_on_grid(ref.images["T1w"], truth).data, np.float64)
            synth = zscore(synth, np.asarray(brain, bool), stats=mask_stats(t1, np.asarray(brain, bool)))
            target_image = translation_target(t1, np.asarray(target_image), np.asarray(brain, bool))
    try:
        result = evaluate_case(
            np.asarray(truth.data), truth.spacing_mm, case_id=ref.case_id, pred=mask, prob=prob,
            brain=brain, uncertainty=unc, synth=synth, target_image=target_image, config=cfg,
        )  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{ref.case_id} ({pred.probseg or pred.mask}): {exc}") from exc
    if pred.lesion_ids is not None and "lesion" in ref.masks and "enhancing" in ref.masks:
        result.activity = _lesion_activity(pred, ref, truth)
    return result, truth.affine


def _lesion_activity(pred: PredictionFiles, ref: CaseFiles, truth: Volume) -> tuple[Any, Any, list[float]]:
    """(reference lesions, scored lesions, p_active of the lesions called active) of one case, from its
    ``desc-all_dseg`` ids and ``desc-all_lesions.tsv`` scores."""
    import csv

    from gdfree.metrics.activity import lesion_activity_case

    assert pred.lesion_ids is not None
    table = pred.lesion_ids.with_name(pred.lesion_ids.name.replace("_dseg", "_lesions").split(".nii")[0] + ".tsv")
    try:
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        scores = {int(r["lesion_id"]): float(r["p_active"]) for r in rows}
        called = [float(r["p_active"]) for r in rows if r["predicted_active"].lower() == "true"]
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(
            f"{table}: not a readable lesion table with lesion_id, p_active and predicted_active ({exc})"
        ) from exc
    ids = np.asarray(_on_grid(pred.lesion_ids, truth).data).astype(np.int64)
    lesion = _on_grid(ref.masks["lesion"], truth, mask=True).data
    refs, own = lesion_activity_case(ref.case_id, lesion, truth.data, ids, scores, truth.spacing_mm)
    return refs, own, called


def write_evaluation(
    out: Path | str, results: list[CaseResult], summary: dict[str, Any], affines: dict[str, np.ndarray]
) -> list[Path]:
    """Write ``cases.tsv``, ``lesions.tsv``, ``by_volume.tsv``, ``froc.tsv`` and ``reliability.tsv`` (when
    probabilities were given), ``patient_roc.tsv`` (when both classes occur), ``retention.tsv`` (each case's
    nDSC retention curve, when an uncertainty map was given) and ``summary.json`` into
    ``out``, and ``failures.tsv`` when some cases could not be scored. Returns the paths written."""
    from gdfree.io.runs import write_failures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_tsv(out / "cases.tsv", [r.row for r in results])]
    failed = write_failures(out, summary.get("failures", {}))
    if failed:
        written.append(failed)
    lesions = []
    for r in results:
        for row in r.lesion_rows(affines.get(r.case_id)):
            vox, mm = row.pop("centroid_vox"), row.pop("centroid_mm")
            row.update({f"centroid_{a}_vox": v for a, v in zip("ijk", vox, strict=True)})
            if mm is not None:
                row.update({f"centroid_{a}_mm": v for a, v in zip("xyz", mm, strict=True)})
            lesions.append(row)
    lesion_columns = ["case_id", "source", "lesion_id", "volume_mm3", "volume_bin", "matched",
                      "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "centroid_i_vox", "centroid_j_vox",
                      "centroid_k_vox"]  # fmt: skip
    written.append(write_tsv(out / "lesions.tsv", lesions, lesion_columns))
    written.append(write_tsv(out / "by_volume.tsv", summary["by_volume"]))
    if "froc" in summary:
        f = summary["froc"]
        rows = [{"threshold": t, "sensitivity": s, "fp_per_scan": fp}
                for t, s, fp in zip(f["thresholds"], f["sensitivity"], f["fp_per_scan"], strict=True)]  # fmt: skip
        written.append(write_tsv(out / "froc.tsv", rows))
        written.append(write_tsv(out / "reliability.tsv", summary["calibration"]["table"]))
    if summary.get("patient", {}).get("roc_curve"):
        written.append(write_tsv(out / "patient_roc.tsv", summary["patient"]["roc_curve"]))
    curves = [r for r in results if r.retention is not None]
    if curves:
        from gdfree.metrics.calibration import RETENTION_FRACTIONS

        rows = [{"case_id": r.case_id, "fraction": float(f), "ndsc": float(v)}
                for r in curves for f, v in zip(RETENTION_FRACTIONS, np.asarray(r.retention), strict=True)]  # fmt: skip
        written.append(write_tsv(out / "retention.tsv", rows))
    written.append(write_json(out / "summary.json", summary))
    return written
