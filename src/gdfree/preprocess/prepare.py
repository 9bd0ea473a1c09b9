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
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

import gdfree
from gdfree.io.bids import MASK_ENTITIES, CaseFiles, bids_name, dataset_description, derivative_path, image_entities
from gdfree.io.cohort import CaseDone
from gdfree.io.images import file_sha256, from_sitk, read_mask, read_volume, to_sitk, write_text, write_volume
from gdfree.io.tables import json_ready, write_json, write_tsv
from gdfree.metrics.voxel import dice
from gdfree.preprocess.brain import BrainExtractionUnavailable, learned_brain_mask
from gdfree.preprocess.enhancing import (
    COMPONENT_COLUMNS,
    EnhancingConfig,
    EnhancingResult,
    apply_review,
    derive_enhancing,
    read_review,
    write_components_png,
    write_qc_png,
)  # fmt: skip
from gdfree.preprocess.intensity import NORMALISATIONS, n4, normalise_intensity
from gdfree.preprocess.registration import RegistrationConfig, register, resample, write_transform
from gdfree.types import POST_CONTRAST, Volume, spacing_from_affine

__all__ = [
    "PIPELINE", "BrainMaskPolicy", "PrepareConfig", "PrepareResult", "atlas_brain_mask", "output_grid",
    "outputs_to_native", "prepare_case", "prepare_dataset", "to_native",
]  # fmt: skip

PIPELINE = "gdfree-prepare"


class BrainMaskPolicy(StrEnum):
    """Where a case's brain mask comes from; checked once, when :class:`PrepareConfig` is made (the CLI, the YAML
    and the pipeline all go through it)."""

    AUTO = "auto"
    """provided, else learned from the T1w by deepbet, else the atlas"""
    PROVIDED = "provided"
    """the dataset's own mask; a case without one fails"""
    LEARNED = "learned"
    """deepbet on the T1w; a case where it fails fails"""
    ATLAS = "atlas"
    """the MNI brain registered to the reference"""

    @classmethod
    def parse(cls, value: str | BrainMaskPolicy) -> BrainMaskPolicy:
        """The policy named ``value``. Raises ValueError naming the allowed values."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"brain_mask: expected one of {allowed}, got {value!r}") from None


BRAIN_MASKS = tuple(p.value for p in BrainMaskPolicy)


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


def atlas_brain_mask(image: Any, config: RegistrationConfig | None = None) -> tuple[Any, Any]:
    """Brain mask of ``image`` (SimpleITK, any T1w/T2w/FLAIR) from nilearn's shipped MNI152 2009 T1 template
    and its brain mask, registered (rigid + affine, mutual information) onto the image; no download.

    Returns:
        (uint8 SimpleITK mask on the image grid, the template -> image transform).
    """
    import SimpleITK as sitk

    from gdfree.io.templates import template_maps

    maps = template_maps(2)
    template = to_sitk(Volume(maps.gm * 0.7 + maps.wm + maps.csf * 0.2, maps.affine))
    brain = to_sitk(Volume(maps.brain, maps.affine))
    transform = register(image, template, config or RegistrationConfig(shrink=(4, 2), smooth_mm=(4.0, 2.0)))
    warped = resample(brain, image, transform, interpolation="linear")
    return sitk.Cast(warped >= 0.5, sitk.sitkUInt8), transform


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


def prepare_case(case: CaseFiles, out: Path | str, config: PrepareConfig | None = None) -> dict[str, Any]:
    """Prepare one case into the dataset folder ``out``; returns its ``_prepare.json`` content.

    Steps: :func:`_align` (read, N4, register, resample), the provided masks onto the grid,
    :func:`_brain_mask`, :func:`_enhancing_labels`, then the images, masks and the record are written.

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
            path = _xfm_path(deriv, case, r, aligned["reference"])
            write_transform(transform, path)
            written[f"xfm_{r}"] = str(path.relative_to(out))
    resampled = aligned["resampled"]
    masks = {role: from_sitk(resample(to_sitk(read_mask(path)), grid, interpolation="nearest")).data > 0
             for role, path in case.masks.items() if role in MASK_ENTITIES}  # fmt: skip
    masks["brain"], info, message = _brain_mask(case.case_id, cfg, resampled, affine, aligned["reference"],
                                                masks.get("brain"))  # fmt: skip
    log.step("brain_mask", message)
    brain = masks["brain"]
    if cfg.derive_enhancing and "enhancing" not in masks and {"T1w", POST_CONTRAST} <= set(resampled):
        masks["enhancing"], info["enhancing"], files = _enhancing_labels(case, cfg, out, resampled, brain,
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
    record = {
        "status": "done", "case": case.case_id, "config_digest": cfg.digest(), "config": dataclasses.asdict(cfg),
        "gdfree_version": gdfree.__version__, "sources": {r: str(p) for r, p in {**case.images, **case.masks}.items()},
        "sources_sha256": _source_hashes(case),
        "reference": aligned["reference"],
        "native_grid": {r: {"shape": list(v.shape), "affine": v.affine.tolist()}
                        for r, v in aligned["volumes"].items()},
        "output_grid": {"shape": list(aligned["shape"]), "affine": affine.tolist()},
        "outputs": written, "normalisation": norm_info, "timings_s": log.timings, **info,
    }  # fmt: skip
    stem = derivative_path(deriv, case.subject, case.session, "prepare", ".json")
    write_text(stem.with_suffix(".log"), "\n".join(log.lines) + "\n")
    write_json(stem, record)
    return record


def _xfm_path(deriv: Path, case: CaseFiles, role: str, reference: str) -> Path:
    ent = {"from": role if role != POST_CONTRAST else "T1gd", "to": reference, "mode": "image"}
    return derivative_path(deriv, case.subject, case.session, "xfm", ".txt", **ent)


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


def _brain_mask(
    case_id: str,
    cfg: PrepareConfig,
    resampled: dict[str, np.ndarray],
    affine: np.ndarray,
    reference: str,
    provided: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """(brain mask, record entries, log line) by ``cfg.brain_mask``: provided, else deepbet on the T1w, else the
    atlas; with a provided mask and ``check_brain_mask``, the other two's Dice against it."""
    if cfg.brain_mask == BrainMaskPolicy.PROVIDED and provided is None:
        raise ValueError(f"{case_id}: brain_mask 'provided' but the case has no brain mask")
    info: dict[str, Any] = {}
    learned = None
    if cfg.brain_mask in (BrainMaskPolicy.LEARNED, BrainMaskPolicy.AUTO) and (provided is None or cfg.check_brain_mask):
        if "T1w" in resampled:
            try:
                learned = learned_brain_mask(Volume(resampled["T1w"], affine))
            except (BrainExtractionUnavailable, ValueError) as exc:
                info["brain_mask_learned_error"] = str(exc)
        else:
            info["brain_mask_learned_error"] = "deepbet needs a T1w; the case has none"
        if provided is not None and learned is not None:
            info["brain_mask_dice_learned_vs_provided"] = round(dice(learned, provided), 4)
    atlas = None
    if cfg.brain_mask == BrainMaskPolicy.ATLAS or (provided is None and learned is None) or (
            provided is not None and cfg.check_brain_mask):  # fmt: skip
        atlas = from_sitk(atlas_brain_mask(to_sitk(Volume(resampled[reference], affine)))[0]).data > 0
        if provided is not None:
            info["brain_mask_dice_atlas_vs_provided"] = round(dice(atlas, provided), 4)
    policy = cfg.brain_mask
    if policy == BrainMaskPolicy.ATLAS or (provided is None and learned is None and policy != BrainMaskPolicy.LEARNED):
        mask, source = atlas, "atlas"
    elif provided is not None and policy != BrainMaskPolicy.LEARNED:
        mask, source = provided, "provided"
    elif learned is not None:
        mask, source = learned, "learned (deepbet)"
    else:
        raise ValueError(f"{case_id}: brain_mask 'learned' failed: {info['brain_mask_learned_error']}")
    assert mask is not None
    info["brain_mask_source"] = source
    checks = [f"{k.split('_')[3]} vs provided Dice {v}" for k, v in info.items() if k.endswith("_vs_provided")]
    fallback = f" (learned failed: {info['brain_mask_learned_error']})" if "brain_mask_learned_error" in info else ""
    return mask, info, source + "".join(", " + c for c in checks) + fallback


def _enhancing_labels(
    case: CaseFiles,
    cfg: PrepareConfig,
    out: Path,
    resampled: dict[str, np.ndarray],
    brain: np.ndarray,
    lesion: np.ndarray | None,
    affine: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any], dict[str, str]]:
    """Derive the enhancing label, apply a rater's review if there is one and write the components table, the
    candidate labels and the QC pictures; returns (mask, derivation info, written files)."""
    spacing = Volume(np.zeros((1, 1, 1)), affine).spacing_mm
    result = derive_enhancing(resampled["T1w"], resampled[POST_CONTRAST], brain, spacing, lesion, cfg.enhancing,
                              flair=resampled.get("FLAIR"), affine=affine)  # fmt: skip
    files = _write_enhancing(case, cfg, out, result, resampled, lesion, affine, _review_path(out, case))
    return result.mask, result.info, files


def _write_enhancing(
    case: CaseFiles,
    cfg: PrepareConfig,
    out: Path,
    result: EnhancingResult,
    images: dict[str, np.ndarray],
    lesion: np.ndarray | None,
    affine: np.ndarray,
    review_path: Path,
) -> dict[str, str]:
    """Apply the review at ``review_path`` (if any) to ``result`` and write the table (the rules' own verdicts
    kept in ``rule_*`` columns), the candidate labels and the QC pictures; returns the files written."""
    deriv = out / "derivatives" / PIPELINE
    where = {"subject": case.subject, "session": case.session}
    spacing = Volume(np.zeros((1, 1, 1)), affine).spacing_mm
    for row in result.components:
        row.setdefault("rule_verdict", row["verdict"])
        row.setdefault("rule_reason", row["reason"])
        row.setdefault("rule_confidence", row["confidence"])
    if review_path.is_file():
        try:
            applied = apply_review(result, read_review(review_path))
        except ValueError as exc:
            raise ValueError(f"{review_path}: {exc}") from None
        result.info["review"] = {"file": str(review_path.relative_to(out)), "sha256": file_sha256(review_path),
                                 **applied}  # fmt: skip
    enh = result.info
    pre, post = images["T1w"], images[POST_CONTRAST]
    qc = derivative_path(deriv, **where, suffix="qc", extension=".png", desc="enhancing")
    write_qc_png(qc, pre, post, result.diff, result.mask,
                 title=f"{case.case_id}: {enh['n_components']} enhancing components kept (red), "
                       f"{enh['n_rejected']} rejected (blue) (k {cfg.enhancing.k}, region {enh['region']})",
                 rejected=(result.candidates > 0) & ~result.mask)  # fmt: skip
    table = derivative_path(deriv, **where, suffix="components", extension=".tsv", desc="enhancing")
    write_tsv(table, [{**row, "decision": "", "rater": "", "note": ""} for row in result.components],
              columns=[*COMPONENT_COLUMNS, "rule_verdict", "rule_reason", "rule_confidence", "decision", "rater",
                       "note"])  # fmt: skip
    candidates = derivative_path(deriv, **where, suffix="dseg", label="enhancing", desc="candidates")
    write_volume(Volume(result.candidates.astype(np.int16), affine), candidates)
    pictures = write_components_png(
        derivative_path(deriv, **where, suffix="qc", extension=".png", desc="components"), result, pre, post,
        flair=images.get("FLAIR"), lesion=lesion, spacing_mm=spacing,
        title=f"{case.case_id}: every enhancing candidate (green kept, red rejected)",
    )  # fmt: skip
    files = {"qc_enhancing": qc, "enhancing_components": table, "enhancing_candidates": candidates}
    files.update({f"qc_components_{n}": q for n, q in enumerate(pictures, start=1)})
    return {k: str(v.relative_to(out)) for k, v in files.items()}


def to_native(volume: Volume, record_path: Path | str, role: str, interpolation: str = "nearest") -> Volume:
    """Map a volume on a prepared case's output grid (a prediction, a mask) back onto the native grid of one
    of its input images, through that image's saved transform; ``interpolation`` as in :func:`resample`.

    Raises:
        ValueError: the volume is not on the case's output grid, or the case has no image of ``role``.
    """
    from gdfree.preprocess.registration import read_transform

    record_path = Path(record_path)
    record = json.loads(record_path.read_text())
    grid = record["output_grid"]
    expected = Volume(np.zeros(grid["shape"], np.uint8), np.asarray(grid["affine"]))
    if not volume.same_grid(expected):
        raise ValueError(f"{volume.path or 'volume'}: not on the output grid of {record['case']} ({record_path})")
    if role not in record["native_grid"]:
        raise ValueError(f"{record['case']} has no {role} image; it has {', '.join(record['native_grid'])}")
    native = record["native_grid"][role]
    target = to_sitk(Volume(np.zeros(native["shape"], np.float32), np.asarray(native["affine"])))
    if role == record["reference"]:
        transform = None
    else:
        transform = read_transform(_output_root(record_path) / record["outputs"][f"xfm_{role}"])
    moved = from_sitk(resample(to_sitk(volume, np.float32), target, transform, interpolation=interpolation,
                               inverse=True))  # fmt: skip
    return moved.with_data(moved.data.astype(volume.data.dtype, copy=False))


def outputs_to_native(
    predictions: Path | str, prepared: Path | str, out: Path | str, role: str | None = None
) -> list[dict[str, Any]]:
    """Map every NIfTI of a ``predict`` output folder back onto the grid each exam was acquired on.

    For each ``predictions/sub-X/[ses-Y/]anat/*.nii.gz``, the case's ``_prepare.json`` in ``prepared`` gives the
    output grid and the transform of ``role`` (default: the prepare reference, usually the acquired FLAIR);
    probabilities, uncertainties and images are resampled linearly, masks and label maps (``_mask``, ``_dseg``)
    nearest-neighbour. Written as ``out/sub-X/.../<name with space-orig>`` plus ``out/native.tsv`` (one row per
    file: source, destination, role, interpolation). ``out`` may not overlap either input.

    Returns:
        the rows of native.tsv (a case without a prepare record, or with no image of ``role``, gets a row with
        its ``error`` and the others go on).

    Raises:
        OutputConflictError: ``out`` overlaps an input. FileNotFoundError: no predicted NIfTI found.
    """
    from gdfree.io.bids import parse_entities
    from gdfree.io.images import image_suffix
    from gdfree.io.runs import check_output_folder

    predictions, prepared = Path(predictions), Path(prepared)
    out = check_output_folder(out, [predictions, prepared])
    files = sorted(p for p in predictions.rglob("sub-*") if p.is_file() and image_suffix(p) in (".nii.gz", ".nii"))
    if not files:
        raise FileNotFoundError(f"{predictions}: no sub-*.nii.gz files (a gdfree predict output folder)")
    rows: list[dict[str, Any]] = []
    for path in files:
        ent = parse_entities(path.name)
        if ent is None or "sub" not in ent:
            continue
        record = derivative_path(prepared / "derivatives" / PIPELINE, ent["sub"], ent.get("ses"), "prepare", ".json")
        row: dict[str, Any] = {"source": str(path), "destination": "", "role": "", "interpolation": "", "error": ""}
        rows.append(row)
        if not record.is_file():
            row["error"] = f"no prepare record {record}"
            continue
        target_role = role or json.loads(record.read_text())["reference"]
        interpolation = "nearest" if ent["suffix"] in ("mask", "dseg") else "linear"
        try:
            native = to_native(read_volume(path), record, target_role, interpolation=interpolation)
        except ValueError as exc:
            row["error"] = str(exc)
            continue
        names = {k: v for k, v in ent.items() if k not in ("suffix", "extension")}
        names["space"] = "orig"
        target = out / path.parent.relative_to(predictions) / bids_name(names, ent["suffix"], ent["extension"])
        write_volume(native, target)
        row.update(destination=str(target.relative_to(out)), role=target_role, interpolation=interpolation)
    write_tsv(out / "native.tsv", rows)
    return rows


def _output_root(record_path: Path) -> Path:
    """The prepare output folder of a ``derivatives/gdfree-prepare/sub-X/[ses-Y/]anat/*_prepare.json``."""
    for parent in record_path.parents:
        if parent.name == "derivatives":
            return parent.parent
    raise ValueError(f"{record_path}: not inside a derivatives/{PIPELINE} folder")


def _record_path(out: Path, case: CaseFiles) -> Path:
    return derivative_path(out / "derivatives" / PIPELINE, case.subject, case.session, "prepare", ".json")


def _source_hashes(case: CaseFiles) -> dict[str, str]:
    return {r: file_sha256(p) for r, p in {**case.images, **case.masks}.items()}


def _state(out: Path, case: CaseFiles, cfg: PrepareConfig) -> str:
    """``done`` (same config, same input files by content, outputs still there, same review), ``review`` (all
    that but the rater's review changed: only the decisions need applying again) or ``todo``."""
    path = _record_path(out, case)
    if not path.is_file():
        return "todo"
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "todo"
    if record.get("status") != "done" or record.get("config_digest") != cfg.digest():
        return "todo"
    if not all((out / rel).is_file() for rel in record.get("outputs", {}).values()):
        return "todo"
    if record.get("sources_sha256") != _source_hashes(case):
        return "todo"
    review = _review_path(out, case)
    reviewed = record.get("enhancing", {}).get("review", {}).get("sha256")
    if (file_sha256(review) if review.is_file() else None) != reviewed:
        return "review" if "enhancing_candidates" in record["outputs"] else "todo"
    return "done"


def _review_path(out: Path, case: CaseFiles) -> Path:
    return derivative_path(out / "derivatives" / PIPELINE, case.subject, case.session, "review", ".tsv",
                           desc="enhancing")  # fmt: skip


def reapply_review(out: Path | str, case: CaseFiles, config: PrepareConfig | None = None) -> dict[str, Any]:
    """Apply a changed rater's review to a prepared case without redoing it: the rules' verdicts come back from
    the components table (``rule_*`` columns), the candidates from their label map, the subtraction from the
    written T1w images (``normalise: none``; otherwise the case is prepared again); the enhancing mask,
    the table, the QC pictures and ``_prepare.json`` are rewritten. Returns the new record."""
    import csv

    cfg = config or PrepareConfig()
    out = Path(out)
    record_path = _record_path(out, case)
    record = json.loads(record_path.read_text())
    if cfg.normalise != "none":
        return prepare_case(case, out, cfg)
    outputs = record["outputs"]
    candidates = read_volume(out / outputs["enhancing_candidates"])
    with (out / outputs["enhancing_components"]).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    components = []
    text = ("verdict", "reason", "local_shift_vox", "rule_verdict", "rule_reason", "decision", "rater", "note")
    for row in rows:
        restored: dict[str, Any] = {k: v if k in text else _number(v) for k, v in row.items()}
        restored.update(verdict=row["rule_verdict"], reason=row["rule_reason"],
                        confidence=float(row["rule_confidence"]))  # fmt: skip
        components.append({k: v for k, v in restored.items() if k not in ("decision", "rater", "note")})
    keep = np.zeros(len(components) + 1, bool)
    keep[1:] = [c["verdict"] == "kept" for c in components]
    labels = candidates.data.astype(np.int32)
    images = {r: read_volume(out / outputs[r]).data for r in ("T1w", POST_CONTRAST, "FLAIR") if r in outputs}
    brain = read_volume(out / outputs["mask_brain"]).data > 0
    enh = {k: v for k, v in record["enhancing"].items() if k != "review"}
    diff = np.where(brain, images[POST_CONTRAST] / enh["post_nawm_mode"] - images["T1w"] / enh["pre_nawm_mode"],
                    0.0).astype(np.float32)  # fmt: skip
    result = EnhancingResult(keep[labels], diff, labels, components, enh)
    lesion = read_volume(out / outputs["mask_lesion"]).data > 0 if "mask_lesion" in outputs else None
    files = _write_enhancing(case, cfg, out, result, images, lesion, candidates.affine, _review_path(out, case))
    write_volume(Volume(result.mask.astype(np.uint8), candidates.affine), out / outputs["mask_enhancing"])
    record["enhancing"] = result.info
    record["outputs"].update(files)
    write_json(record_path, record)
    return record


def _number(cell: str) -> int | float | None:
    """A numeric TSV cell as written by :func:`gdfree.io.tables.write_tsv` (``n/a``: None)."""
    if cell in ("", "n/a"):
        return None
    value = float(cell)
    return int(value) if value.is_integer() and "." not in cell and "e" not in cell.lower() else value


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare_dataset` did: case ids prepared now, skipped (done before), whose changed review was
    applied, and case id -> reason for those that failed (also in ``out/failures.tsv``)."""

    done: list[str]
    skipped: list[str]
    reviewed: list[str]
    failed: dict[str, str]


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
        review = _review_path(out, case)
        return (f"config:{digest}", *(f"{r}:{h}" for r, h in sorted(_source_hashes(case).items())),
                f"review:{file_sha256(review) if review.is_file() else 'none'}")  # fmt: skip

    result = run_cohort(selected, out, {"command": "prepare"}, fingerprint=fingerprint,
                        work=functools.partial(_prepare_one, out=out, cfg=cfg), jobs=jobs,
                        progress=progress)  # fmt: skip
    reviewed = [r["case_id"] for r in result.rows if r.get("status") == "reviewed" and r["case_id"] in result.done]
    return PrepareResult([c for c in result.done if c not in reviewed], result.skipped, reviewed, result.failed)


def _prepare_one(case: CaseFiles, inputs: tuple[str, ...], *, out: Path, cfg: PrepareConfig) -> CaseDone:
    """The per-case work of :func:`prepare_dataset`: nothing when the case's record says it is done (a folder
    prepared before the runner kept a manifest), the rater's review alone when only it changed, else the whole
    case."""
    state = _state(out, case, cfg)
    if state == "review":
        record, status = reapply_review(out, case, cfg), "reviewed"
    elif state == "done":
        record, status = json.loads(_record_path(out, case).read_text()), "done"
    else:
        record, status = prepare_case(case, out, cfg), "done"
    stem = _record_path(out, case)
    outputs = [out / rel for rel in record["outputs"].values()] + [stem, stem.with_suffix(".log")]
    return CaseDone({"case_id": case.case_id, "status": status}, [p for p in outputs if p.is_file()])
