"""The synthetic MS cohort written as a BIDS dataset: subjects drawn and rendered by :mod:`gdfree.phantom.subject`
under a :class:`~gdfree.phantom.config.PhantomConfig` (its docstring holds the calibrated contrasts), truth in
``derivatives/phantom``."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.config import save_config
from gdfree.io.images import write_text, write_volume
from gdfree.phantom.config import SIGNATURE_EFFECTS, PhantomConfig
from gdfree.phantom.longitudinal import STATUSES, PairConfig, apply_move, draw_pair, head_move, status_map
from gdfree.phantom.subject import (
    CONFOUNDER_KINDS,
    SubjectParams,
    lesion_confounders,
    render_subject,
    sample_subject,
    subject_label,
)
from gdfree.types import POST_CONTRAST, Volume

__all__ = [
    "CONFOUNDER_KINDS", "PhantomConfig", "SubjectParams", "lesion_confounders", "render_subject", "sample_subject",
    "subject_label", "write_cohort",
]  # fmt: skip


def _is_synth_dataset(out: Path) -> bool:
    try:
        desc = json.loads((out / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    return any(g.get("Name") == "gdfree-synth" for g in desc.get("GeneratedBy", []))


def _dataset_description(name: str, kind: str) -> str:
    from gdfree import __version__
    from gdfree.io.bids import dataset_description

    desc = dataset_description(
        name,
        kind,
        License="CC-BY-4.0",
        GeneratedBy=[{"Name": "gdfree-synth", "Version": __version__}],
        ReferencesAndLinks=[
            "Lesjak Z et al. A Novel Public MR Image Dataset of Multiple Sclerosis Patients With Lesion "
            "Segmentations Based on Multi-rater Consensus. Neuroinformatics 2017 (real lesion shapes)",
            "MNI ICBM152 2009a nonlinear symmetric templates, as shipped in nilearn (anatomy)",
        ],
    )
    return json.dumps(desc, indent=2) + "\n"


def _write_session(
    out: Path, label: str, session: str | None, images: dict[str, np.ndarray], masks: dict[str, np.ndarray],
    affine: np.ndarray, record: dict[str, Any],
) -> None:  # fmt: skip
    stem = f"sub-{label}" + (f"_ses-{session}" if session else "")
    where = Path(f"sub-{label}") / (f"ses-{session}" if session else "") / "anat"
    for role, img in images.items():
        name = f"{stem}_ce-gadolinium_T1w" if role == POST_CONTRAST else f"{stem}_{role}"
        data = np.clip(np.round(img), 0, np.iinfo(np.int16).max).astype(np.int16)
        write_volume(Volume(data, affine), out / where / f"{name}.nii.gz")
    truth = out / "derivatives" / "phantom" / where
    names = {"lesion": "label-lesion_mask", "enhancing": "label-enhancing_mask", "brain": "desc-brain_mask",
             "change": "desc-change_dseg", "new": "label-new_mask"}  # fmt: skip
    for role, mask in masks.items():
        write_volume(Volume(mask.astype(np.uint8), affine), truth / f"{stem}_{names[role]}.nii.gz")
    write_text(truth / f"{stem}_phantom.json", json.dumps(record, indent=1) + "\n")


def _row(label: str, record: dict[str, Any], params: SubjectParams, masks: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "participant_id": f"sub-{label}",
        "n_lesions": record["n_lesions"],
        "n_active": record["n_active"],
        "lesion_volume_mm3": round(sum(les.volume_mm3 for les in params.lesions), 1),
        "enhancing_voxels": int(masks["enhancing"].sum()),
    }


def synthesize_subject(cfg: PhantomConfig, seed: int, index: int, n_subjects: int, out: Path) -> dict[str, Any]:
    """Sample, render and write subject ``index`` of a cohort; return its summary row."""
    label = subject_label(index, n_subjects)
    rng = np.random.default_rng([seed, index])
    params, anat = sample_subject(rng, cfg, label, [seed, index])
    images, masks, affine = render_subject(params, cfg, anat)
    record = params.to_json()
    _write_session(out, label, None, images, masks, affine, record)
    return _row(label, record, params, masks)


def synthesize_pair(
    cfg: PhantomConfig, pair: PairConfig, seed: int, index: int, n_subjects: int, out: Path
) -> dict[str, Any]:
    """Subject ``index`` as a prior (``ses-1``) and a follow-up (``ses-2``, the single-session subject's images
    and truth) with each follow-up lesion's status (:mod:`gdfree.phantom.longitudinal`); its summary row."""
    label = subject_label(index, n_subjects)
    params, anat = sample_subject(np.random.default_rng([seed, index]), cfg, label, [seed, index])
    images, masks, affine = render_subject(params, cfg, anat)
    rng = np.random.default_rng([seed, index, 2])  # the follow-up's draws are untouched
    prior, status = draw_pair(rng, params, cfg, pair)
    old_images, old_masks, _ = render_subject(prior, cfg, anat, vessel_lesions=params.lesions)
    move = head_move(rng, pair, params.deform.centre_mm)
    old_images = {role: apply_move(img, affine, move) for role, img in old_images.items()}
    old_masks = {role: apply_move(m, affine, move) >= 0.5 for role, m in old_masks.items()}
    masks["change"] = status_map(params.lesions, status, affine, masks["lesion"].shape, cfg)
    masks["new"] = np.isin(masks["change"], (1 + STATUSES.index("new"), 1 + STATUSES.index("enlarging")))
    record = params.to_json()
    for lesion in record["lesions"]:
        lesion["status"] = status[lesion["id"]]
    record["n_new"] = sum(s == "new" for s in status.values())
    old_record = prior.to_json()
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS
    old_record["move_ras"] = np.round(move, 6).tolist()
    old_record["followup_to_prior_lps"] = np.round(flip @ np.linalg.inv(move) @ flip, 6).tolist()
    _write_session(out, label, "1", old_images, old_masks, affine, old_record)
    _write_session(out, label, "2", images, masks, affine, record)
    row = _row(label, record, params, masks)
    row["n_new"] = record["n_new"]
    row["n_enlarging"] = sum(s == "enlarging" for s in status.values())
    return row


def write_cohort(
    out: Path | str,
    cfg: PhantomConfig,
    n_subjects: int,
    seed: int,
    *,
    jobs: int = 1,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    first: int = 0,
    timepoints: int = 1,
    pair: PairConfig | None = None,
) -> list[dict[str, Any]]:
    """Write a BIDS dataset of ``n_subjects`` synthetic subjects (truth under derivatives/phantom).

    ``timepoints=2`` writes each subject as a prior ``ses-1`` and a follow-up ``ses-2`` (:func:`synthesize_pair`,
    under ``pair``; default :class:`PairConfig`); the follow-up equals the single-session subject.

    Same config and seed, same bytes; subject ``i`` depends only on (seed, i), not on ``n_subjects``.
    ``first`` skips the first subjects: ``first=100`` writes sub-101 onwards, the patients a 100-subject
    cohort of the same config and seed does not have (a held-out batch).

    Raises:
        FileExistsError: ``out`` holds files and is not a gdfree-synth dataset, or is one and
            ``overwrite`` is False.
    """
    out = Path(out)
    if n_subjects < 1 or first < 0:
        raise ValueError(f"n_subjects >= 1 and first >= 0 expected, got {n_subjects} and {first}")
    if timepoints not in (1, 2):
        raise ValueError(f"timepoints: expected 1 or 2, got {timepoints}")
    one: Callable[[int, int, int, Path], dict[str, Any]] = (
        functools.partial(synthesize_subject, cfg) if timepoints == 1
        else functools.partial(synthesize_pair, cfg, pair or PairConfig())
    )  # fmt: skip
    total = first + n_subjects
    if out.exists() and any(out.iterdir()):
        if not _is_synth_dataset(out):
            raise FileExistsError(
                f"{out}: folder is not empty and is not a gdfree synthetic dataset; refusing to write"
            )
        if not overwrite:
            raise FileExistsError(f"{out}: a synthetic dataset is already there; pass --overwrite to replace it")
        for old in [*out.glob("sub-*"), out / "derivatives" / "phantom"]:
            shutil.rmtree(old, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "dataset_description.json", _dataset_description("gdfree synthetic MS cohort", "raw"))
    deriv = out / "derivatives" / "phantom"
    write_text(deriv / "dataset_description.json", _dataset_description("gdfree phantom ground truth", "derivative"))
    save_config(cfg, deriv / "phantom_config.yaml")
    if timepoints == 2:
        write_text(deriv / "longitudinal.json", json.dumps((pair or PairConfig()).to_json(), indent=1) + "\n")
    write_text(deriv / "signature.json", json.dumps(
        {"strength": cfg.signature_strength, "modalities": list(cfg.signature_modalities),
         "effects": {m: SIGNATURE_EFFECTS[m] for m in cfg.signature_modalities}}, indent=1) + "\n")  # fmt: skip
    rows: list[dict[str, Any]] = []
    if jobs <= 1:
        for k, i in enumerate(range(first, total)):
            rows.append(one(seed, i, total, out))
            if progress:
                progress(k + 1)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, seed, i, total, out) for i in range(first, total)]
            for i, fut in enumerate(futures):
                rows.append(fut.result())
                if progress:
                    progress(i + 1)
    header = list(rows[0])
    tsv = "\t".join(header) + "\n" + "".join("\t".join(str(r[k]) for k in header) + "\n" for r in rows)
    write_text(out / "participants.tsv", tsv)
    write_text(out / "README", _readme(cfg, n_subjects, seed, first, timepoints))
    return rows


def _readme(cfg: PhantomConfig, n_subjects: int, seed: int, first: int = 0, timepoints: int = 1) -> str:
    which = f" (sub-{subject_label(first, first + n_subjects)} onwards)" if first else ""
    sessions = (
        "Two sessions per subject: ses-1 (prior: no enhancing lesion, the head moved; its move in its "
        "phantom.json) and ses-2 (follow-up); each follow-up lesion's status (new, enlarging, stable, shrinking) "
        "in ses-2's phantom.json and desc-change_dseg (1 new, 2 enlarging, 3 stable, 4 shrinking); the new and\n"
        "enlarging lesions also as label-new_mask (the `new` head's label).\n"
        if timepoints == 2 else ""
    )  # fmt: skip
    return (
        "gdfree synthetic MS cohort\n\n"
        f"{n_subjects} subjects{which}, seed {seed}, {cfg.resolution_mm} mm, signature strength "
        f"{cfg.signature_strength} on {', '.join(cfg.signature_modalities)}.\n"
        "Inputs: sub-*/anat/*_{T1w,T2w,FLAIR,PD}; post-gadolinium T1w: *_ce-gadolinium_T1w (a label source, "
        f"never an input).\n{sessions}"
        "Ground truth: derivatives/phantom (lesion, enhancing and brain masks; every sampled parameter in "
        "sub-*_phantom.json; the full config in phantom_config.yaml).\n"
        "Real lesion shapes: open_ms_data, Lesjak et al., Neuroinformatics 2017 (CC-BY).\n"
    )
