"""The synthetic MS cohort written as a BIDS dataset: subjects drawn and rendered by :mod:`gdfree.phantom.subject`
under a :class:`~gdfree.phantom.config.PhantomConfig` (its docstring holds the calibrated contrasts), truth in
``derivatives/phantom``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.config import save_config
from gdfree.io.images import write_text, write_volume
from gdfree.phantom.config import SIGNATURE_EFFECTS, PhantomConfig
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


def synthesize_subject(cfg: PhantomConfig, seed: int, index: int, n_subjects: int, out: Path) -> dict[str, Any]:
    """Sample, render and write subject ``index`` of a cohort; return its summary row."""
    label = subject_label(index, n_subjects)
    rng = np.random.default_rng([seed, index])
    params, anat = sample_subject(rng, cfg, label, [seed, index])
    images, masks, affine = render_subject(params, cfg, anat)
    anat_dir = out / f"sub-{label}" / "anat"
    for role, img in images.items():
        name = f"sub-{label}_ce-gadolinium_T1w" if role == POST_CONTRAST else f"sub-{label}_{role}"
        data = np.clip(np.round(img), 0, np.iinfo(np.int16).max).astype(np.int16)
        write_volume(Volume(data, affine), anat_dir / f"{name}.nii.gz")
    truth = out / "derivatives" / "phantom" / f"sub-{label}" / "anat"
    names = {"lesion": "label-lesion_mask", "enhancing": "label-enhancing_mask", "brain": "desc-brain_mask"}
    for role, mask in masks.items():
        write_volume(Volume(mask.astype(np.uint8), affine), truth / f"sub-{label}_{names[role]}.nii.gz")
    record = params.to_json()
    write_text(truth / f"sub-{label}_phantom.json", json.dumps(record, indent=1) + "\n")
    return {
        "participant_id": f"sub-{label}",
        "n_lesions": record["n_lesions"],
        "n_active": record["n_active"],
        "lesion_volume_mm3": round(sum(les.volume_mm3 for les in params.lesions), 1),
        "enhancing_voxels": int(masks["enhancing"].sum()),
    }


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
) -> list[dict[str, Any]]:
    """Write a BIDS dataset of ``n_subjects`` synthetic subjects (truth under derivatives/phantom).

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
    write_text(deriv / "signature.json", json.dumps(
        {"strength": cfg.signature_strength, "modalities": list(cfg.signature_modalities),
         "effects": {m: SIGNATURE_EFFECTS[m] for m in cfg.signature_modalities}}, indent=1) + "\n")  # fmt: skip
    rows: list[dict[str, Any]] = []
    if jobs <= 1:
        for k, i in enumerate(range(first, total)):
            rows.append(synthesize_subject(cfg, seed, i, total, out))
            if progress:
                progress(k + 1)
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(synthesize_subject, cfg, seed, i, total, out) for i in range(first, total)]
            for i, fut in enumerate(futures):
                rows.append(fut.result())
                if progress:
                    progress(i + 1)
    header = list(rows[0])
    tsv = "\t".join(header) + "\n" + "".join("\t".join(str(r[k]) for k in header) + "\n" for r in rows)
    write_text(out / "participants.tsv", tsv)
    write_text(out / "README", _readme(cfg, n_subjects, seed, first))
    return rows


def _readme(cfg: PhantomConfig, n_subjects: int, seed: int, first: int = 0) -> str:
    which = f" (sub-{subject_label(first, first + n_subjects)} onwards)" if first else ""
    return (
        "gdfree synthetic MS cohort\n\n"
        f"{n_subjects} subjects{which}, seed {seed}, {cfg.resolution_mm} mm, signature strength "
        f"{cfg.signature_strength} on {', '.join(cfg.signature_modalities)}.\n"
        "Inputs: sub-*/anat/*_{T1w,T2w,FLAIR,PD}; post-gadolinium T1w: *_ce-gadolinium_T1w (a label source, "
        "never an input).\nGround truth: derivatives/phantom (lesion, enhancing and brain masks; every sampled "
        "parameter in sub-*_phantom.json; the full config in phantom_config.yaml).\n"
        "Real lesion shapes: open_ms_data, Lesjak et al., Neuroinformatics 2017 (CC-BY).\n"
    )
