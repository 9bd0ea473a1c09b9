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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.explain.importance import (
    OCCLUSIONS,
    ig_rows,
    occlusion_importance,
    permutation_importance,
    summarise,
)
from gdfree.explain.maps import METHODS, lesion_maps, overlay_png
from gdfree.explain.patterns import DEFAULT_BINS_MM, cohort_profiles, lesion_profile
from gdfree.explain.sanity import PASS_BELOW, randomised_copy, rank_correlation
from gdfree.explain.targets import find_lesions

__all__ = ["explain_dataset"]


CONTRASTS = (("reference active", "reference inactive"), ("predicted active", "predicted inactive"))
"""Group pairs whose difference of importance is reported as the separation (active minus inactive)."""


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
) -> dict[str, Any]:
    """Explain the ``enhancing`` head of the model in ``run_dir`` on the cases of ``input_path``.

    Every lesion (``source``: the model's ``predicted`` lesions, the ``reference`` enhancing label's, or
    every lesion of the case's all-lesion mask, ``lesion-mask``) gets occlusion importance per modality;
    maps (``methods``), IG importance, profiles and sanity checks are computed for the mapped lesions:
    ``lesion`` (an id of ``lesions.tsv`` for one case), every lesion with ``all_lesions`` (at most
    ``max_mapped`` per lesion group and case, the most probable first, when > 0), else the most probable
    lesion of each case. ``permutation`` adds permutation importance when there are >= 2 cases on one grid.
    ``label_randomised``: a run trained with ``randomise_labels: true`` for the label-randomisation check.
    ``out`` belongs to one explanation (``gdfree_run.json``): another model or other options are refused
    unless ``overwrite``, which deletes the older explanation's files first. A case that cannot be read is
    listed in ``out/failures.tsv`` and the others are explained.

    Returns:
        {"summary": importance summary rows, "separation": rows, "sanity": rows, "profiles": rows,
        "lesions": rows, "timings": seconds, "failures": case -> reason}

    Raises:
        ValueError: a lesion id that does not exist, training cases (unless allowed), no case.
    """
    from gdfree.data.cases import file_fingerprints, load_array_case
    from gdfree.errors import GdfreeError
    from gdfree.infer.model import TrainedModel
    from gdfree.io.bids import derivative_path
    from gdfree.io.cohort import select
    from gdfree.io.images import write_volume
    from gdfree.io.runs import MANIFEST, RECORDS, RunManifest, check_output_folder, write_failures
    from gdfree.io.tables import write_json, write_tsv
    from gdfree.predict import dataset_root, select_cases
    from gdfree.types import Volume

    for name, value, low in (("crop", crop, 8), ("steps", steps, 1), ("max_mapped", max_mapped, 0)):
        if value < low:
            raise ValueError(f"--{name.replace('_', '-')}: expected {low} or more, got {value}")
    start = time.perf_counter()
    controls = [label_randomised] if label_randomised else []
    out = check_output_folder(out, [dataset_root(input_path), run_dir, *controls])
    trained = TrainedModel.load(run_dir, device)
    model, heads, modalities = trained.network, list(trained.heads), list(trained.modalities)
    if "enhancing" not in heads:
        raise ValueError(f"{run_dir}: the model has no enhancing head to explain")
    if "enhancing" not in trained.network_heads:
        raise ValueError(
            f"{run_dir}: a translation model reads enhancement from its synthetic post-Gd T1w; "
            "attributions of that are not implemented (explain a model with an enhancing head)"
        )
    identity = {"command": "explain", "model": trained.weights_sha256, "input": str(Path(input_path).resolve()),
                "cases": sorted(case_ids) if case_ids is not None else None, "lesion": lesion,
                "all_lesions": all_lesions, "max_mapped": max_mapped, "source": source, "methods": list(methods),
                "occlusions": list(occlusions), "permutation": permutation, "crop": crop, "steps": steps,
                "layer": layer, "sanity": sanity, "seed": seed,
                "label_randomised": str(label_randomised) if label_randomised else None}  # fmt: skip
    files_list = select(select_cases(input_path), case_ids, where=str(input_path))
    if not allow_training_cases:  # every case, before anything is written
        for files in files_list:
            if not files.missing(modalities):
                prints = file_fingerprints([files.images[m] for m in modalities])
                trained.refuse_if_seen(files.case_id, prints, what="explaining")
    manifest = RunManifest.open(out, identity, replace=overwrite)
    head = list(trained.network_heads).index("enhancing")
    temperature, threshold = trained.temperature["enhancing"], trained.thresholds["enhancing"]
    # the lesions `predict` writes: none of the model's min_lesion_mm3 or less
    rule = trained.lesion_rule() if source == "predicted" else trained.rule
    randomised = randomised_copy(model, seed) if sanity else None
    shuffled = TrainedModel.load(label_randomised, device).network if label_randomised else None
    cases, lesion_sets, rows, lesion_rows, profile_entries, sanity_rows = [], [], [], [], [], []
    failures: dict[str, str] = {}
    timings = {"occlusion_s": 0.0, "maps_s": 0.0, "sanity_s": 0.0, "permutation_s": 0.0}
    for k, files in enumerate(files_list):
        want = tuple(h for h in ("enhancing", "lesion") if h in files.masks)
        try:
            case = load_array_case(files, modalities, want, oracle=trained.oracle)
        except (GdfreeError, ValueError, OSError) as exc:  # reported per case; the other cases go on
            failures[files.case_id] = str(exc)
            continue
        prob = np.where(case.brain, trained.probabilities(case.image, device)[head], 0.0)
        labels, found = find_lesions(case, prob, threshold, rule, source, case.labels.get("enhancing"),
                                     case.labels.get("lesion"))  # fmt: skip
        cases.append(case)
        lesion_sets.append((labels, len(found)))
        for item in found:
            lesion_rows.append({"case_id": case.case_id, "lesion_id": item.lesion_id, "voxels": item.voxels,
                                "centroid_vox": list(item.centroid), "mean_probability": round(item.probability, 4),
                                "predicted_active": item.predicted_active, "reference_active": item.reference_active,
                                "group": _group(item, source)})  # fmt: skip
        t0 = time.perf_counter()
        rows += occlusion_importance(model, case, labels, len(found), modalities, head=head, modes=occlusions,
                                     raw_zero=case.raw_zero, seed=seed, device=device)  # fmt: skip
        timings["occlusion_s"] += time.perf_counter() - t0
        mapped = _lesions_to_map(case.case_id, found, source, lesion, all_lesions, max_mapped) if methods else []
        ref = Volume(case.brain, case.affine)
        for item in mapped:
            region = labels == item.lesion_id
            valid = case.brain & ((labels == 0) | region)  # profiles: brain voxels of no other lesion
            t0 = time.perf_counter()
            maps = lesion_maps(model, case, region, head=head, methods=methods, crop=crop, steps=steps, layer=layer,
                               device=device)  # fmt: skip
            timings["maps_s"] += time.perf_counter() - t0
            for method in (m for m in METHODS if m in maps):
                data = maps[method]
                for c, modality in enumerate(modalities if data.ndim == 4 else ["all"]):
                    layer_map = data[c] if data.ndim == 4 else data
                    desc = f"lesion{item.lesion_id}{method.capitalize()}{modality.replace('-', '')}"
                    target = derivative_path(out, case.subject, case.session, "attribution", desc=desc)
                    write_volume(ref.with_data(layer_map.astype(np.float32)), target)
                    profile_entries.append({"group": _group(item, source), "method": method, "modality": modality,
                                            "profile": lesion_profile(layer_map, region, valid, case.spacing_mm,
                                                                      bins_mm)})  # fmt: skip
            if "ig" in maps:
                rows += ig_rows(case.case_id, item.lesion_id, modalities, maps["ig"])
            overlay_png(derivative_path(out, case.subject, case.session, "attribution", ".png",
                                        desc=f"lesion{item.lesion_id}"), case, modalities, region, maps,
                        title=f"{case.case_id} lesion {item.lesion_id} ({_group(item, source)}, "
                              f"p={item.probability:.2f}): red = evidence for enhancement")  # fmt: skip
            t0 = time.perf_counter()
            for control, other in (("parameters", randomised), ("labels", shuffled)):
                if other is None:
                    continue
                checked = [m for m in methods if m != "occlusion"]
                again = lesion_maps(other, case, region, head=head, methods=checked, crop=crop, steps=steps,
                                    layer=layer, device=device)  # fmt: skip
                for method in checked:
                    rho = rank_correlation(maps[method], again[method])
                    sanity_rows.append({"case_id": case.case_id, "lesion_id": item.lesion_id, "control": control,
                                        "method": method, "rank_correlation": rho,
                                        "passed": bool(rho == rho and abs(rho) < PASS_BELOW)})  # fmt: skip
            timings["sanity_s"] += time.perf_counter() - t0
        if progress:
            progress(k + 1, len(files_list))
    if not cases:
        raise ValueError(f"{input_path}: no case could be read; " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    if permutation and len(cases) >= 2 and len({c.brain.shape for c in cases}) == 1:
        t0 = time.perf_counter()
        rows += permutation_importance(model, cases, lesion_sets, modalities, head=head, seed=seed, device=device)
        timings["permutation_s"] = time.perf_counter() - t0
    group_of = {(r["case_id"], r["lesion_id"]): r["group"] for r in lesion_rows}
    for row in rows:
        row["group"] = group_of[(row["case_id"], row["lesion_id"])]
    summary = summarise(rows, seed=seed) if rows else []
    present = {r["group"] for r in rows}
    pair = next(((a, b) for a, b in CONTRASTS if a in present and b in present), None)
    separation = summarise(rows, contrast=pair, seed=seed) if pair else []
    profiles = cohort_profiles(profile_entries, bins_mm) if profile_entries else []
    write_failures(out, failures)
    write_tsv(out / "lesions.tsv", lesion_rows)
    write_tsv(out / "importance.tsv", rows)
    write_tsv(out / "importance_summary.tsv", summary)
    write_tsv(out / "separation_summary.tsv", separation)
    write_tsv(out / "profiles.tsv", profiles)
    write_tsv(out / "sanity.tsv", sanity_rows)
    if summary:
        from gdfree.explain.importance import bar_chart

        bar_chart(summary, out / "importance_summary.png",
                  title=f"Modality importance, {len(lesion_rows)} {source} lesions of {len(cases)} cases")  # fmt: skip
        if separation:
            bar_chart(separation, out / "separation_summary.png",
                      title="Separation: importance on active minus inactive lesions")  # fmt: skip
    if profiles:
        from gdfree.explain.patterns import profile_png

        profile_png(profiles, out / "profiles.png")
    timings["total_s"] = time.perf_counter() - start
    write_json(out / "explain.json", {
        "model": str(Path(run_dir).resolve()), "weights_sha256": trained.weights_sha256,
        "input": str(input_path), "cases": [c.case_id for c in cases], "lesion_source": source,
        "methods": list(methods), "occlusions": list(occlusions), "crop": crop, "ig_steps": steps,
        "gradcam_layer": layer or "fuse[-1]", "seed": seed, "threshold": threshold, "temperature": temperature,
        "label_randomised": str(label_randomised) if label_randomised else None, "timings_s": timings,
    })  # fmt: skip
    outputs = [p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST and RECORDS not in
               p.relative_to(out).parts[:1]]  # fmt: skip
    manifest.record("explain", sorted(f for c in cases for f in c.fingerprints), {"cases": len(cases)}, outputs)
    return {"summary": summary, "separation": separation, "sanity": sanity_rows, "profiles": profiles,
            "lesions": lesion_rows, "timings": timings, "failures": failures}  # fmt: skip
