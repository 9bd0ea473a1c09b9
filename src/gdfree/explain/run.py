"""``gdfree explain``: modality importance, attribution maps, patterns and sanity checks for cases of a model.

Outputs under ``OUT``::

    lesions.tsv                 every lesion considered: case, id, voxels, centroid, probability, groups
    importance.tsv              one row per (lesion, modality, method): the drop of the lesion's mean logit
    importance_summary.tsv/png  per lesion group, method and modality: mean, patient-bootstrap 95% CI, share, rank
    separation_summary.tsv/png  with active and inactive lesions: active minus inactive importance (which
                                modality carries the activity signal rather than the lesion), same columns
    profiles.tsv/png            lesion-centred signed attribution profiles per group (mapped lesions)
    sanity.tsv                  rank correlation of each mapped lesion's maps with a randomised model's
    sub-X/anat/sub-X_desc-lesion<N><Method><Modality>_attribution.nii.gz   signed maps on the input grid
    sub-X/anat/sub-X_desc-lesion<N>_attribution.png                        overlays
    explain.json                settings, model, timings

Every lesion (``source``: the model's ``predicted`` lesions, the ``reference`` enhancing label's, or every lesion
of the case's all-lesion mask, ``lesion-mask``) gets occlusion importance per modality; maps (``methods``), IG
importance, profiles and sanity checks are computed for the mapped lesions: ``lesion`` (an id of ``lesions.tsv``
for one case), every lesion with ``all_lesions`` (at most ``max_mapped`` per lesion group and case, the most
probable first, when > 0), else the most probable lesion of each case. ``permutation`` adds permutation
importance when there are >= 2 cases on one grid. ``label_randomised``: a run trained with
``randomise_labels: true`` for the label-randomisation check. ``OUT`` belongs to one explanation
(``gdfree_run.json``): another model or other options are refused unless ``overwrite``, which deletes the older
explanation's files first; the cases are chosen through the cohort runner and training cases refused before
anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.data.cases import ArrayCase
from gdfree.errors import GdfreeError
from gdfree.explain.importance import (
    OCCLUSIONS,
    ig_rows,
    occlusion_importance,
    permutation_importance,
)
from gdfree.explain.maps import METHODS, lesion_maps, overlay_png
from gdfree.explain.patterns import DEFAULT_BINS_MM, lesion_profile
from gdfree.explain.sanity import PASS_BELOW, randomised_copy, rank_correlation
from gdfree.explain.tables import write_tables
from gdfree.explain.targets import find_lesions
from gdfree.io.bids import CaseFiles
from gdfree.io.runs import MANIFEST, RECORDS
from gdfree.io.tables import write_json

__all__ = ["ExplainResult", "explain_dataset"]


def _group(lesion: Any, source: str) -> str:
    if source != "predicted" and lesion.reference_active is not None:
        return "reference active" if lesion.reference_active else "reference inactive"
    return "predicted active" if lesion.predicted_active else "predicted inactive"


def _lesions_to_map(
    case_id: str, found: Sequence[Any], source: str, lesion: int | None, all_lesions: bool, max_mapped: int
) -> list[Any]:
    """The lesions of one case that get maps: ``lesion`` alone, every lesion (at most ``max_mapped`` per group,
    the most probable first, when > 0), or the most probable one."""
    if lesion is not None:
        if lesion not in {f.lesion_id for f in found}:
            raise ValueError(f"{case_id}: no lesion {lesion}; it has {len(found)} ({source})")
        return [f for f in found if f.lesion_id == lesion]
    by_probability = sorted(found, key=lambda f: -f.probability)
    if not all_lesions:
        return by_probability[:1]
    if max_mapped == 0:
        return list(found)
    groups = dict.fromkeys(_group(f, source) for f in found)
    return [f for g in groups for f in [f for f in by_probability if _group(f, source) == g][:max_mapped]]


def explain_dataset(
    run_dir: Path | str,
    input_path: Path | str,
    out: Path | str,
    *,
    case_ids: Sequence[str] | None = None,
    lesion: int | None = None,
    all_lesions: bool = False,
    max_mapped: int = 0,
    source: str = "predicted",
    methods: Sequence[str] = METHODS,
    occlusions: Sequence[str] = OCCLUSIONS,
    permutation: bool = True,
    crop: int = 48,
    steps: int = 32,
    layer: str | None = None,
    sanity: bool = True,
    label_randomised: Path | str | None = None,
    bins_mm: Sequence[float] = DEFAULT_BINS_MM,
    seed: int = 0,
    device: str = "cpu",
    allow_training_cases: bool = False,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> ExplainResult:
    """Explain the ``enhancing`` head of the model in ``run_dir`` on the cases of ``input_path``.

    Which lesions are explained and how: the module docstring. A case that cannot be read is listed in
    ``out/failures.tsv`` and the others are explained.

    Returns:
        the tables' rows, timings and failures (:class:`ExplainResult`).

    Raises:
        ValueError: a lesion id that does not exist, training cases (unless allowed), no case.
    """
    from gdfree.infer.model import TrainedModel
    from gdfree.io.runs import RunManifest, check_output_folder, write_failures
    from gdfree.predict import dataset_root

    for name, value, low in (("crop", crop, 8), ("steps", steps, 1), ("max_mapped", max_mapped, 0)):
        if value < low:
            raise ValueError(f"--{name.replace('_', '-')}: expected {low} or more, got {value}")
    start = time.perf_counter()
    controls = [label_randomised] if label_randomised else []
    out = check_output_folder(out, [dataset_root(input_path), run_dir, *controls])
    trained = TrainedModel.load(run_dir, device)
    opts = _Options(source, tuple(methods), tuple(occlusions), crop, steps, layer, seed, device, lesion, all_lesions,
                    max_mapped, tuple(bins_mm))  # fmt: skip
    ctx = _setup(trained, run_dir, opts, sanity, label_randomised, device)
    files_list = _selected(input_path, case_ids, trained, allow_training_cases)
    manifest = RunManifest.open(out, {
        "command": "explain", "model": trained.weights_sha256, "input": str(Path(input_path).resolve()),
        "cases": sorted(case_ids) if case_ids is not None else None, "lesion": lesion, "all_lesions": all_lesions,
        "max_mapped": max_mapped, "source": source, "methods": list(methods), "occlusions": list(occlusions),
        "permutation": permutation, "crop": crop, "steps": steps, "layer": layer, "sanity": sanity, "seed": seed,
        "label_randomised": str(label_randomised) if label_randomised else None,
    }, replace=overwrite)  # fmt: skip
    timings = {"occlusion_s": 0.0, "maps_s": 0.0, "sanity_s": 0.0, "permutation_s": 0.0}
    explained, failures = _explain_all(files_list, ctx, out, timings, progress)
    if not explained:
        raise ValueError(f"{input_path}: no case could be read; " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    cases = [e.case for e in explained]
    rows = [r for e in explained for r in e.rows] + (_permutation_rows(explained, ctx, timings) if permutation else [])
    write_failures(out, failures)
    result = write_tables(out, explained, rows, opts)
    timings["total_s"] = time.perf_counter() - start
    write_json(out / "explain.json", {
        "model": str(Path(run_dir).resolve()), "weights_sha256": trained.weights_sha256, "input": str(input_path),
        "cases": [c.case_id for c in cases], **_settings(opts), "threshold": ctx.threshold,
        "temperature": trained.temperature["enhancing"],
        "label_randomised": str(label_randomised) if label_randomised else None, "timings_s": timings,
    })  # fmt: skip
    outputs = [p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST and RECORDS not in
               p.relative_to(out).parts[:1]]  # fmt: skip
    manifest.record("explain", sorted(f for c in cases for f in c.fingerprints), {"cases": len(cases)}, outputs)
    return ExplainResult(**result, timings=timings, failures=failures)


@dataclass(frozen=True)
class ExplainResult:
    """What :func:`explain_dataset` found: the rows of ``importance_summary.tsv``, ``separation_summary.tsv``,
    ``sanity.tsv``, ``profiles.tsv`` and ``lesions.tsv``, seconds per part, and case id -> reason of the cases
    that could not be read."""

    summary: list[dict[str, Any]]
    separation: list[dict[str, Any]]
    sanity: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    lesions: list[dict[str, Any]]
    timings: dict[str, float]
    failures: dict[str, str]


@dataclass(frozen=True)
class _Options:
    source: str
    methods: tuple[str, ...]
    occlusions: tuple[str, ...]
    crop: int
    steps: int
    layer: str | None
    seed: int
    device: str
    lesion: int | None
    all_lesions: bool
    max_mapped: int
    bins_mm: tuple[float, ...]


def _settings(opts: _Options) -> dict[str, Any]:
    """The options ``explain.json`` records, by their names there."""
    return {"lesion_source": opts.source, "methods": list(opts.methods), "occlusions": list(opts.occlusions),
            "crop": opts.crop, "ig_steps": opts.steps, "gradcam_layer": opts.layer or "fuse[-1]", "seed": opts.seed}


@dataclass(frozen=True)
class _Setup:
    """What every case is explained with: the model's network, inputs, head and threshold, the lesion rule, the
    sanity-check controls and the options."""

    model: Any
    modalities: list[str]
    head: int
    threshold: float
    trained: Any
    rule: Any
    randomised: Any
    shuffled: Any
    opts: _Options


@dataclass
class _Explained:
    """One case's results: its arrays and lesion labels, and its rows of each table."""

    case: ArrayCase
    labels: np.ndarray
    n: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    lesion_rows: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    sanity: list[dict[str, Any]] = field(default_factory=list)


def _setup(trained: Any, run_dir: Path | str, opts: _Options, sanity: bool, label_randomised: Path | str | None,
           device: str) -> _Setup:  # fmt: skip
    """Check the model can be explained and gather what every case needs."""
    from gdfree.infer.model import TrainedModel

    if "enhancing" not in trained.heads:
        raise ValueError(f"{run_dir}: the model has no enhancing head to explain")
    if "enhancing" not in trained.network_heads:
        raise ValueError(
            f"{run_dir}: a translation model reads enhancement from its synthetic post-Gd T1w; "
            "attributions of that are not implemented (explain a model with an enhancing head)"
        )
    # the lesions `predict` writes: none of the model's min_lesion_mm3 or less
    rule = trained.lesion_rule() if opts.source == "predicted" else trained.rule
    return _Setup(
        model=trained.network, modalities=list(trained.modalities),
        head=list(trained.network_heads).index("enhancing"), threshold=trained.thresholds["enhancing"],
        trained=trained, rule=rule, randomised=randomised_copy(trained.network, opts.seed) if sanity else None,
        shuffled=TrainedModel.load(label_randomised, device).network if label_randomised else None, opts=opts,
    )  # fmt: skip


def _selected(input_path: Path | str, case_ids: Sequence[str] | None, trained: Any, allowed: bool) -> list[CaseFiles]:
    """The cases to explain (through the cohort runner's selection), each refused, before anything is written,
    when a model was fitted on it (unless ``allowed``)."""
    from gdfree.data.cases import file_fingerprints
    from gdfree.io.cohort import select
    from gdfree.predict import select_cases

    files_list = select(select_cases(input_path), case_ids, where=str(input_path))
    if not allowed:
        for files in files_list:
            if not files.missing(trained.modalities):
                prints = file_fingerprints(files.input_paths(trained.modalities))
                trained.refuse_if_seen(files.case_id, prints, what="explaining")
    return files_list


def _explain_all(
    files_list: Sequence[CaseFiles], ctx: _Setup, out: Path, timings: dict[str, float],
    progress: Callable[[int, int], None] | None,
) -> tuple[list[_Explained], dict[str, str]]:  # fmt: skip
    """Every case explained in turn; one that cannot be read is a failure (case id -> reason), the others go on."""
    from gdfree.data.cases import load_array_case

    explained, failures = [], {}
    for k, files in enumerate(files_list):
        want = tuple(h for h in ("enhancing", "lesion") if h in files.masks)
        try:
            case = load_array_case(files, ctx.modalities, want, oracle=ctx.trained.oracle,
                                   normalisation=ctx.trained.normalisation)  # fmt: skip
        except (GdfreeError, ValueError, OSError) as exc:  # reported per case; the other cases go on
            failures[files.case_id] = str(exc)
        else:
            explained.append(_explain_case(case, ctx, out, timings))
        if progress:
            progress(k + 1, len(files_list))
    return explained, failures


def _permutation_rows(explained: Sequence[_Explained], ctx: _Setup, timings: dict[str, float]) -> list[dict[str, Any]]:
    """Permutation importance over the cases, when there are two or more on one grid (else none)."""
    cases = [e.case for e in explained]
    if len(cases) < 2 or len({c.brain.shape for c in cases}) != 1:
        return []
    t0 = time.perf_counter()
    rows = permutation_importance(ctx.model, cases, [(e.labels, e.n) for e in explained], ctx.modalities,
                                  head=ctx.head, seed=ctx.opts.seed, device=ctx.opts.device)  # fmt: skip
    timings["permutation_s"] = time.perf_counter() - t0
    return rows


def _explain_case(case: ArrayCase, ctx: _Setup, out: Path, timings: dict[str, float]) -> _Explained:
    """Occlusion importance of every lesion of one case, and maps, profiles and sanity checks of the mapped ones."""
    opts = ctx.opts
    probs = ctx.trained.probabilities(case.image, opts.device, case.brain, case.spacing_mm)
    prob = np.where(case.brain, probs[ctx.head], 0.0)
    labels, found = find_lesions(case, prob, ctx.threshold, ctx.rule, opts.source, case.labels.get("enhancing"),
                                 case.labels.get("lesion"))  # fmt: skip
    result = _Explained(case, labels, len(found))
    for item in found:
        result.lesion_rows.append({
            "case_id": case.case_id, "lesion_id": item.lesion_id, "voxels": item.voxels,
            "centroid_vox": list(item.centroid), "mean_probability": round(item.probability, 4),
            "predicted_active": item.predicted_active, "reference_active": item.reference_active,
            "group": _group(item, opts.source)})  # fmt: skip
    t0 = time.perf_counter()
    result.rows += occlusion_importance(ctx.model, case, labels, len(found), ctx.modalities, head=ctx.head,
                                        modes=opts.occlusions, raw_zero=case.raw_zero, seed=opts.seed,
                                        device=opts.device)  # fmt: skip
    timings["occlusion_s"] += time.perf_counter() - t0
    mapped = (_lesions_to_map(case.case_id, found, opts.source, opts.lesion, opts.all_lesions, opts.max_mapped)
              if opts.methods else [])  # fmt: skip
    for item in mapped:
        _map_lesion(item, result, ctx, out, timings)
    return result


def _map_lesion(item: Any, result: _Explained, ctx: _Setup, out: Path, timings: dict[str, float]) -> None:
    """Attribution maps of one lesion (written on the case's grid, with an overlay), its profiles, IG rows and
    the sanity checks against the randomised controls, added to ``result``."""
    from gdfree.io.bids import derivative_path
    from gdfree.io.images import write_volume
    from gdfree.types import Volume

    opts, case, labels = ctx.opts, result.case, result.labels
    region = labels == item.lesion_id
    valid = case.brain & ((labels == 0) | region)  # profiles: brain voxels of no other lesion
    t0 = time.perf_counter()
    maps = lesion_maps(ctx.model, case, region, head=ctx.head, methods=opts.methods, crop=opts.crop, steps=opts.steps,
                       layer=opts.layer, device=opts.device)  # fmt: skip
    timings["maps_s"] += time.perf_counter() - t0
    group, ref = _group(item, opts.source), Volume(case.brain, case.affine)
    for method in (m for m in METHODS if m in maps):
        data = maps[method]
        for c, modality in enumerate(ctx.modalities if data.ndim == 4 else ["all"]):
            layer_map = data[c] if data.ndim == 4 else data
            desc = f"lesion{item.lesion_id}{method.capitalize()}{modality.replace('-', '')}"
            write_volume(ref.with_data(layer_map.astype(np.float32)),
                         derivative_path(out, case.subject, case.session, "attribution", desc=desc))  # fmt: skip
            result.profiles.append({"group": group, "method": method, "modality": modality,
                                    "profile": lesion_profile(layer_map, region, valid, case.spacing_mm,
                                                              opts.bins_mm)})  # fmt: skip
    if "ig" in maps:
        result.rows += ig_rows(case.case_id, item.lesion_id, ctx.modalities, maps["ig"])
    overlay_png(derivative_path(out, case.subject, case.session, "attribution", ".png", desc=f"lesion{item.lesion_id}"),
                case, ctx.modalities, region, maps,
                title=f"{case.case_id} lesion {item.lesion_id} ({group}, p={item.probability:.2f}): red = evidence "
                      "for enhancement")  # fmt: skip
    t0 = time.perf_counter()
    for control, other in (("parameters", ctx.randomised), ("labels", ctx.shuffled)):
        if other is None:
            continue
        checked = [m for m in opts.methods if m != "occlusion"]
        again = lesion_maps(other, case, region, head=ctx.head, methods=checked, crop=opts.crop, steps=opts.steps,
                            layer=opts.layer, device=opts.device)  # fmt: skip
        for method in checked:
            rho = rank_correlation(maps[method], again[method])
            result.sanity.append({"case_id": case.case_id, "lesion_id": item.lesion_id, "control": control,
                                  "method": method, "rank_correlation": rho,
                                  "passed": bool(rho == rho and abs(rho) < PASS_BELOW)})  # fmt: skip
    timings["sanity_s"] += time.perf_counter() - t0


