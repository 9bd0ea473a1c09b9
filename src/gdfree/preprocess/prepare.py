"""``gdfree prepare``: every preprocessing step per case, in parallel over cases, skipping finished cases.

Per case: read every image; N4 bias correction; rigid registration (affine on request) of each modality onto
the reference (FLAIR by default) and of the post-Gd T1w onto the pre-Gd T1w (composed onto the reference);
one resampling of every image onto the output grid (the reference reoriented to RAS, optionally at another
isotropic spacing); provided masks resampled nearest-neighbour; a brain mask (provided, else deepbet's on the
T1w, else the nilearn MNI152 brain registered onto the case; Dice against a provided one is reported);
optional normalisation; and, with pre- and post-Gd T1w, a derived enhancing label with its QC pictures.

Output (readable by :func:`gdfree.io.adapters.discover` as a BIDS dataset)::

    OUT/dataset_description.json, OUT/sub-X/[ses-Y/]anat/sub-X_<mod>.nii.gz   (post-Gd: ce-gadolinium_T1w)
    OUT/derivatives/gdfree-prepare/sub-X/[ses-Y/]anat/
        *_desc-brain_mask, *_label-lesion_mask, *_label-enhancing_mask (provided or derived)
        *_from-<mod>_mode-image_to-<ref>_xfm.txt   ITK transforms, reference points -> native <mod> points
        *_desc-enhancing_qc.png, *_prepare.json (steps, timings, grids to invert), *_prepare.log
        derived enhancing labels also: *_desc-enhancing_components.tsv (every candidate: verdict, rule, confidence,
        rule values), *_label-enhancing_desc-candidates_dseg (their numbers), *_desc-components_qc.png (zoomed)
        *_desc-enhancing_review.tsv   written by a rater, never by prepare: a copy of the components table with
            ``decision`` accept/reject; prepare applies it (matching components by position); a changed review is
            applied again on the next run without redoing the case

A case whose ``_prepare.json`` says ``done`` with the same config is skipped; outputs are written atomically
and the JSON last, so an interrupted case is simply redone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gdfree
from gdfree.io.bids import MASK_ENTITIES, CaseFiles, bids_name, dataset_description, derivative_path, image_entities
from gdfree.io.cohort import CaseDone
from gdfree.io.images import file_sha256, from_sitk, read_mask, read_volume, to_sitk, write_text, write_volume
from gdfree.io.tables import json_ready, write_json
from gdfree.preprocess.brain import BrainMaskPolicy, choose_brain_mask
from gdfree.preprocess.enhancing import EnhancingConfig
from gdfree.preprocess.intensity import NORMALISATIONS, n4, normalise_intensity
from gdfree.preprocess.labels import enhancing_labels, reapply_review
from gdfree.preprocess.layout import PIPELINE, record_path, review_path, xfm_path
from gdfree.preprocess.record import PrepareRecord
from gdfree.preprocess.registration import RegistrationConfig, register, resample, write_transform
from gdfree.types import POST_CONTRAST, Volume, spacing_from_affine

__all__ = [
    "PIPELINE", "PrepareConfig", "PrepareResult", "output_grid", "prepare_case", "prepare_dataset",
]  # fmt: skip


COHORT_SAMPLING = (0.2, 0.1, 0.03)
"""Registration samples per level in ``prepare``: as accurate as 10% at every level on the longitudinal test
(0.93 / 0.83 mm from the upstream transform vs 0.92 / 0.85, rigid + affine) in half the time (a 1 mm exam's
T1w onto its FLAIR: 62 s vs 121 s on one core; benchmarks/registration_speed.py, docs/inference.md)."""

COHORT_STAGES = ("rigid",)
"""Registration stages in ``prepare``: the images of one exam (or of one patient's sessions) differ by a rigid
move; the affine stage after it took as long again and was no closer to the upstream transforms of the
longitudinal test (rigid alone, 20/10/3% samples: 0.96 / 0.70 mm, 9.5 / 10.5 s; rigid + affine: 0.93 / 0.83 mm,
two to three times the time). ``registration: {stages: [rigid, affine]}`` brings it back."""


@dataclass(frozen=True)
class PrepareConfig:
    """What ``prepare`` does (saved in every case's ``_prepare.json``; a change redoes finished cases).

    Attributes:
        reference: the modality every other one is registered to (its grid, reoriented to RAS, is the output).
        spacing_mm: isotropic output spacing; None keeps the reference's voxel size.
        n4, n4_shrink: N4 bias correction and its shrink factor.
        register: False trusts that the images are already aligned (resampled with identity).
        registration: the registration knobs; by default rigid only (:data:`COHORT_STAGES`) with 20%, 10% and
            3% of the voxels sampled at shrink 4, 2 and 1 (:data:`COHORT_SAMPLING`).
        brain_mask: ``auto`` (provided, else learned from the T1w by deepbet, else the atlas), ``provided`` (error
            if missing), ``learned`` (error if deepbet fails) or ``atlas``.
        check_brain_mask: with a provided mask, also compute the learned and atlas ones and report their Dice.
        normalise: ``none`` (training z-scores by itself), ``zscore`` or ``nawm``.
        derive_enhancing: derive the enhancing label from T1w/T1gd when the case has no provided one.
        enhancing: the derivation knobs.
    """

    reference: str = "FLAIR"
    spacing_mm: float | None = None
    n4: bool = True
    n4_shrink: int = 4
    register: bool = True
    registration: RegistrationConfig = field(
        default_factory=lambda: RegistrationConfig(stages=COHORT_STAGES, sampling=COHORT_SAMPLING)
    )
    brain_mask: BrainMaskPolicy = BrainMaskPolicy.AUTO
    check_brain_mask: bool = True
    normalise: str = "none"
    derive_enhancing: bool = True
    enhancing: EnhancingConfig = field(default_factory=EnhancingConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "brain_mask", BrainMaskPolicy.parse(self.brain_mask))
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise: expected one of {', '.join(NORMALISATIONS)}, got {self.normalise!r}")
        if self.spacing_mm is not None and self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm: expected > 0, got {self.spacing_mm}")

    def digest(self) -> str:
        text = json.dumps(json_ready(dataclasses.asdict(self)), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def output_grid(reference: Volume, spacing_mm: float | None = None) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape, RAS+ affine) of the output grid: the reference's voxels reordered/flipped to RAS (no
    interpolation when ``spacing_mm`` is None), else an RAS grid of that isotropic spacing over the same box."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(reference.affine)
    shape = tuple(int(s) for s in np.asarray(reference.shape)[ornt[:, 0].astype(int)])
    affine = reference.affine @ nib.orientations.inv_ornt_aff(ornt, reference.shape)
    if spacing_mm is None:
        return (shape[0], shape[1], shape[2]), affine
    old = np.asarray(spacing_from_affine(affine))
    new_shape = np.maximum(np.ceil(np.asarray(shape) * old / spacing_mm).astype(int), 1)
    direction = affine[:3, :3] / old
    centre = affine @ np.append((np.asarray(shape) - 1) / 2, 1)
    new = np.eye(4)
    new[:3, :3] = direction * spacing_mm
    new[:3, 3] = centre[:3] - new[:3, :3] @ ((new_shape - 1) / 2)
    return (int(new_shape[0]), int(new_shape[1]), int(new_shape[2])), new


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def step(self, name: str, message: str = "") -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._t, 3)
        self._t = now
        self.lines.append(f"{name}: {self.timings[name]:.2f} s{' - ' + message if message else ''}")


def prepare_case(case: CaseFiles, out: Path | str, config: PrepareConfig | None = None) -> PrepareRecord:
    """Prepare one case into the dataset folder ``out``; returns its record (``_prepare.json``).

    Steps: :func:`_align` (read, N4, register, resample), the provided masks onto the grid,
    :func:`_brain_mask`, :func:`enhancing_labels`, then the images, masks and the record are written.

    Raises:
        MissingModalityError / ValueError: no reference modality, a provided brain mask required but missing.
        ImageReadError: an unreadable image (named).
    """
    cfg = config or PrepareConfig()
    out = Path(out)
    deriv = out / "derivatives" / PIPELINE
    log = _Log()
    aligned = _align(case, cfg, log)
    affine, grid = aligned["affine"], aligned["grid"]
    written: dict[str, str] = {}
    for r, transform in aligned["transforms"].items():
        if r != aligned["reference"]:
            path = xfm_path(deriv, case, r, aligned["reference"])
            write_transform(transform, path)
            written[f"xfm_{r}"] = str(path.relative_to(out))
    resampled = aligned["resampled"]
    masks = {role: from_sitk(resample(to_sitk(read_mask(path)), grid, interpolation="nearest")).data > 0
             for role, path in case.masks.items() if role in MASK_ENTITIES}  # fmt: skip
    masks["brain"], info, message = choose_brain_mask(case.case_id, cfg.brain_mask, cfg.check_brain_mask, resampled,
                                                      affine, aligned["reference"], masks.get("brain"))  # fmt: skip
    log.step("brain_mask", message)
    brain = masks["brain"]
    if cfg.derive_enhancing and "enhancing" not in masks and {"T1w", POST_CONTRAST} <= set(resampled):
        masks["enhancing"], info["enhancing"], files = enhancing_labels(case, cfg.enhancing, out, resampled, brain,
                                                                         masks.get("lesion"), affine)  # fmt: skip
        written.update(files)
        enh = info["enhancing"]
        log.step("enhancing", f"{enh['n_candidates']} candidates, {enh['n_components']} kept, threshold "
                              f"{enh['threshold']:.3f}" + (" (reviewed)" if "review" in enh else ""))  # fmt: skip
    norm_info = {}
    for r in resampled:
        data, norm_info[r] = normalise_intensity(resampled[r], brain, cfg.normalise, masks.get("lesion"))
        entities, suffix = image_entities(r)
        name = bids_name({"sub": case.subject, **({"ses": case.session} if case.session else {}), **entities}, suffix)
        folder = out / f"sub-{case.subject}" / (f"ses-{case.session}" if case.session else "") / "anat"
        written[r] = str(write_volume(Volume(data, affine), folder / name).relative_to(out))
    for role, mask in masks.items():
        path = derivative_path(deriv, case.subject, case.session, "mask", **MASK_ENTITIES[role])
        written[f"mask_{role}"] = str(write_volume(Volume(mask.astype(np.uint8), affine), path).relative_to(out))
    log.step("write", f"{len(written)} files")
    record = PrepareRecord(
        case=case.case_id, config_digest=cfg.digest(), config=json_ready(dataclasses.asdict(cfg)),
        gdfree_version=gdfree.__version__, sources={r: str(p) for r, p in {**case.images, **case.masks}.items()},
        sources_sha256=_source_hashes(case), reference=aligned["reference"],
        native_grid={r: {"shape": list(v.shape), "affine": v.affine.tolist()} for r, v in aligned["volumes"].items()},
        output_grid={"shape": list(aligned["shape"]), "affine": affine.tolist()}, outputs=written,
        normalisation=norm_info, timings_s=log.timings, enhancing=info.pop("enhancing", None), brain_mask=info,
    )  # fmt: skip
    stem = record_path(out, case)
    write_text(stem.with_suffix(".log"), "\n".join(log.lines) + "\n")
    record.write(stem)
    return record


def _align(case: CaseFiles, cfg: PrepareConfig, log: _Log) -> dict[str, Any]:
    """Read, N4, register every image (post-Gd through the pre-Gd T1w) and resample it onto the output grid.

    Returns:
        {"reference", "volumes" (native), "transforms" (reference -> native points), "shape", "affine", "grid"
        (SimpleITK), "resampled" (role -> float32 array on the grid)}.
    """
    import SimpleITK as sitk

    roles = list(case.images)
    ref_role = cfg.reference if cfg.reference in case.images else next(
        (r for r in ("FLAIR", "T1w", "T2w", "PD") if r in case.images), None)  # fmt: skip
    if ref_role is None:
        raise ValueError(f"{case.case_id}: no pre-contrast image to use as the reference (has {roles})")
    volumes = {r: read_volume(p) for r, p in case.images.items()}
    images = {r: to_sitk(v, np.float32) for r, v in volumes.items()}
    log.step("read", ", ".join(f"{r} {volumes[r].shape} {tuple(round(s, 2) for s in volumes[r].spacing_mm)}"
                               for r in roles))  # fmt: skip
    if cfg.n4:
        images = {r: n4(img, shrink=cfg.n4_shrink)[0] for r, img in images.items()}
        log.step("n4", f"shrink {cfg.n4_shrink}")
    shape, affine = output_grid(volumes[ref_role], cfg.spacing_mm)
    grid = to_sitk(Volume(np.zeros(shape, np.float32), affine))
    transforms: dict[str, Any] = {ref_role: sitk.Transform()}
    if cfg.register:
        for r in roles:
            if r == ref_role or (r == POST_CONTRAST and "T1w" in images and ref_role != "T1w"):
                continue
            transforms[r] = register(images[ref_role], images[r], cfg.registration)
        if POST_CONTRAST in images and POST_CONTRAST not in transforms:
            to_pre = register(images["T1w"], images[POST_CONTRAST], cfg.registration)
            transforms[POST_CONTRAST] = sitk.CompositeTransform([to_pre, transforms["T1w"]])
        log.step("register", f"onto {ref_role}: {', '.join(r for r in roles if r != ref_role)}")
    else:
        transforms.update({r: sitk.Transform() for r in roles})
    resampled = {r: from_sitk(resample(images[r], grid, transforms[r])).data for r in roles}
    log.step("resample", f"onto {shape} at {tuple(round(s, 2) for s in Volume(np.zeros(shape), affine).spacing_mm)} mm")
    return {"reference": ref_role, "volumes": volumes, "transforms": transforms, "shape": shape, "affine": affine,
            "grid": grid, "resampled": resampled}  # fmt: skip


def _source_hashes(case: CaseFiles) -> dict[str, str]:
    return {r: file_sha256(p) for r, p in {**case.images, **case.masks}.items()}


def _state(out: Path, case: CaseFiles, cfg: PrepareConfig) -> str:
    """``done`` (same config, same input files by content, outputs still there, same review), ``review`` (all
    that but the rater's review changed: only the decisions need applying again) or ``todo``."""
    path = record_path(out, case)
    if not path.is_file():
        return "todo"
    try:
        record = PrepareRecord.read(path)
    except ValueError:  # unreadable or not a record: prepared again
        return "todo"
    if record.status != "done" or record.config_digest != cfg.digest():
        return "todo"
    if not all((out / rel).is_file() for rel in record.outputs.values()):
        return "todo"
    if record.sources_sha256 != _source_hashes(case):
        return "todo"
    review = review_path(out, case)
    reviewed = (record.enhancing or {}).get("review", {}).get("sha256")
    if (file_sha256(review) if review.is_file() else None) != reviewed:
        return "review" if "enhancing_candidates" in record.outputs else "todo"
    return "done"


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare_dataset` did: case ids prepared now, skipped (done before), whose changed review was
    applied, case id -> reason for those that failed (also in ``out/failures.tsv``), and case id -> how many rows
    of its rater's review matched no enhancing candidate (listed in its ``_prepare.json``)."""

    done: list[str]
    skipped: list[str]
    reviewed: list[str]
    failed: dict[str, str]
    unmatched_review: dict[str, int] = field(default_factory=dict)


def prepare_dataset(
    cases: Sequence[CaseFiles],
    out: Path | str,
    config: PrepareConfig | None = None,
    *,
    jobs: int = 1,
    progress: Callable[[str, str], None] | None = None,
    inputs: Sequence[Path | str] = (),
    shard: tuple[int, int] | None = None,
) -> PrepareResult:
    """Prepare every case through the cohort runner (:func:`gdfree.io.cohort.run_cohort`; ``jobs`` processes;
    with ``shard`` (K, N) only part K of N: N jobs may share one ``out``), skipping those already done with the
    same config from the same input files (by content) and the same rater's review, and only re-applying a
    changed review to those reviewed since (:func:`reapply_review`). ``out`` may not overlap ``inputs`` (the
    dataset folders) or the folder of any case file: nothing is ever written under an input path.

    Raises:
        OutputConflictError: ``out`` overlaps an input or holds another command's outputs.
    """
    from gdfree.io.cohort import run_cohort, select
    from gdfree.io.runs import check_output_folder

    if jobs < 1:
        raise ValueError(f"--jobs: expected 1 or more processes, got {jobs}")
    cfg = config or PrepareConfig()
    sources = {p.parent for c in cases for p in (*c.images.values(), *c.masks.values())}
    out = check_output_folder(out, [*inputs, *sorted(sources)])
    selected = select(cases, None, shard, where=str(inputs[0]) if inputs else "prepare")
    out.mkdir(parents=True, exist_ok=True)
    description = dataset_description("gdfree prepare output", "derivative",
                                      GeneratedBy=[{"Name": PIPELINE, "Version": gdfree.__version__}])
    write_json(out / "dataset_description.json", description)
    write_json(out / "derivatives" / PIPELINE / "dataset_description.json", description)
    digest = cfg.digest()

    def fingerprint(case: CaseFiles) -> tuple[str, ...]:
        review = review_path(out, case)
        return (f"config:{digest}", *(f"{r}:{h}" for r, h in sorted(_source_hashes(case).items())),
                f"review:{file_sha256(review) if review.is_file() else 'none'}")  # fmt: skip

    result = run_cohort(selected, out, {"command": "prepare"}, fingerprint=fingerprint,
                        work=functools.partial(_prepare_one, out=out, cfg=cfg), jobs=jobs,
                        progress=progress)  # fmt: skip
    reviewed = [r["case_id"] for r in result.rows if r.get("status") == "reviewed" and r["case_id"] in result.done]
    unmatched = {r["case_id"]: int(r["review_unmatched"]) for r in result.rows if r.get("review_unmatched")}
    return PrepareResult([c for c in result.done if c not in reviewed], result.skipped, reviewed, result.failed,
                         unmatched)  # fmt: skip


def _prepare_one(case: CaseFiles, inputs: tuple[str, ...], *, out: Path, cfg: PrepareConfig) -> CaseDone:
    """The per-case work of :func:`prepare_dataset`: nothing when the case's record says it is done (a folder
    prepared before the runner kept a manifest), the rater's review alone when only it changed, else the whole
    case."""
    state = _state(out, case, cfg)
    if state == "review" and cfg.normalise == "none":  # normalised images: the subtraction must be redone
        record, status = reapply_review(out, case, cfg.enhancing), "reviewed"
    elif state == "done":
        record, status = PrepareRecord.read(record_path(out, case)), "done"
    else:
        record, status = prepare_case(case, out, cfg), "done"
    stem = record_path(out, case)
    outputs = [out / rel for rel in record.outputs.values()] + [stem, stem.with_suffix(".log")]
    unmatched = len((record.enhancing or {}).get("review", {}).get("unmatched", []))
    return CaseDone({"case_id": case.case_id, "status": status, "review_unmatched": unmatched},
                    [p for p in outputs if p.is_file()])  # fmt: skip
