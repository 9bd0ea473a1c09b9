"""One case's report: what ``gdfree predict`` (and, when they ran, ``prepare`` and ``explain``) wrote for it.

``REPORT/<case>.html`` with its pictures and viewer data in ``REPORT/<case>/``:

    mosaic-flair.png, mosaic-t1w.png     axial mosaics: predicted enhancing lesions (red, filled), predicted
                                         lesions (cyan outline), reference lesions (yellow outline)
    mosaic-uncertainty.png               the voxel uncertainty (with --mc, --flips or --ensemble)
    mosaic-subtraction.png               post- minus pre-contrast T1w with the derived enhancing label, when
                                         the dataset has a post-Gd T1w (quality control of the labels)
    registration.png, histograms.png     input QC
    prepare-*.png, explain-*.png         copies of prepare's and explain's pictures for this case
    viewer.js                            the viewer's volumes (see :mod:`gdfree.report.viewer`)
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.arrays import spacing_from_affine, window_range, zscore
from gdfree.errors import GdfreeError
from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.io.images import atomic_path, read_mask, read_volume
from gdfree.report import figures
from gdfree.report.render import render_page

__all__ = ["CaseMaps", "load_case_maps", "read_rows", "write_case_report"]

UNCERTAINTY_PREFERENCE = ("enhancingMutualInformation", "enhancingPredictiveEntropy", "enhancingVariance",
                          "enhancingExpectedEntropy")  # fmt: skip
"""The voxel uncertainty shown, first found (mutual information: the model's own doubt, docs/uncertainty.md)."""


@dataclass
class CaseMaps:
    """A case's images and predictions on one grid (arrays in the input's orientation; ``affine`` maps them)."""

    affine: np.ndarray
    images: dict[str, np.ndarray]
    brain: np.ndarray
    prob: np.ndarray | None = None
    enhancing: np.ndarray | None = None
    lesions: np.ndarray | None = None
    lesions_source: str = ""
    lesion_ids: np.ndarray | None = None
    uncertainty: np.ndarray | None = None
    uncertainty_name: str = ""
    reference_enhancing: np.ndarray | None = None
    reference_lesions: np.ndarray | None = None
    prior: np.ndarray | None = None  # the prior session's FLAIR on this grid (``predict --prior``)
    new_prob: np.ndarray | None = None  # the ``new`` head's probability (a model with prior-exam channels)
    change: np.ndarray | None = None  # each predicted lesion's status, 1 new ... 4 shrinking
    sources: dict[str, Path] = field(default_factory=dict)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a TSV file (empty when it does not exist).

    Raises:
        GdfreeError: it cannot be read as a table.
    """
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GdfreeError(f"{path}: not a readable TSV table ({exc})") from exc


def _on_grid(name: str, path: Path, data: np.ndarray, affine: np.ndarray, ref_shape: tuple[int, ...],
             ref_affine: np.ndarray, ref_path: Path) -> np.ndarray:  # fmt: skip
    if data.shape != ref_shape or not np.allclose(affine, ref_affine, atol=1e-3):
        raise GdfreeError(f"{path}: the {name} is on grid {data.shape} and {ref_path} on {ref_shape} (or their "
                          "affines differ); the report needs the predictions on the input grid")  # fmt: skip
    return data


def load_case_maps(predictions: Path, files: CaseFiles) -> CaseMaps:
    """Read the inputs of ``files`` and the predictions ``gdfree predict`` wrote for it under ``predictions``.

    Raises:
        GdfreeError: no image, a file is unreadable, or a prediction is on another grid than the inputs.
    """
    order = [m for m in ("FLAIR", "T1w", "T2w", "T1gd") if m in files.images] + sorted(
        set(files.images) - {"FLAIR", "T1w", "T2w", "T1gd"})  # fmt: skip
    if not order:
        raise GdfreeError(f"{files.case_id}: no input image found")
    first = read_volume(files.images[order[0]])
    shape, affine, ref_path = first.data.shape, np.asarray(first.affine, float), files.images[order[0]]
    maps = CaseMaps(affine=affine, images={}, brain=np.ones(shape, bool), sources=dict(files.images))
    for role in order:
        vol = first if role == order[0] else read_volume(files.images[role])
        maps.images[role] = _on_grid(role, files.images[role], np.asarray(vol.data, np.float32), vol.affine, shape,
                                     affine, ref_path)  # fmt: skip

    def pred(suffix: str, desc: str, mask: bool = False) -> np.ndarray | None:
        path = derivative_path(predictions, files.subject, files.session, suffix, desc=desc)
        if not path.is_file():
            return None
        vol = read_mask(path) if mask else read_volume(path)
        maps.sources[f"{desc}_{suffix}"] = path
        return _on_grid(f"{desc} {suffix}", path, np.asarray(vol.data), vol.affine, shape, affine, ref_path)

    if "brain" in files.masks:
        brain = read_mask(files.masks["brain"])
        maps.brain = _on_grid("brain mask", files.masks["brain"], np.asarray(brain.data) > 0, brain.affine, shape,
                              affine, ref_path)  # fmt: skip
    else:
        maps.brain = maps.images[order[0]] > 0
    maps.prob = pred("probseg", "enhancing")
    maps.enhancing = pred("mask", "enhancing", mask=True)
    if maps.prob is None and maps.enhancing is None:
        expected = derivative_path(predictions, files.subject, files.session, "probseg", desc="enhancing")
        raise GdfreeError(f"{predictions}: no enhancing prediction of {files.case_id} (expected {expected})")
    maps.lesion_ids = pred("dseg", "all")
    maps.reference_lesions = _mask(files, "lesion", shape, affine, ref_path)
    for source, found in (("predicted by the lesion head", lambda: pred("mask", "lesion", mask=True)),
                          ("visible lesions (desc-all_dseg)", lambda: maps.lesion_ids)):  # fmt: skip
        lesions = found()
        if lesions is not None:
            maps.lesions, maps.lesions_source = lesions > 0, source
            break
    maps.reference_enhancing = _mask(files, "enhancing", shape, affine, ref_path)
    maps.prior, maps.change, maps.new_prob = pred("FLAIR", "prior"), pred("dseg", "change"), pred("probseg", "new")
    for desc in UNCERTAINTY_PREFERENCE:
        unc = pred("uncertainty", desc)
        if unc is not None:
            maps.uncertainty, maps.uncertainty_name = unc, desc
            break
    return maps


def _mask(files: CaseFiles, role: str, shape: tuple[int, ...], affine: np.ndarray, ref_path: Path) -> np.ndarray | None:
    if role not in files.masks:
        return None
    vol = read_mask(files.masks[role])
    return _on_grid(f"{role} mask", files.masks[role], np.asarray(vol.data) > 0, vol.affine, shape, affine, ref_path)


def _focus_slices(ras_prob: np.ndarray | None, ras_mask: np.ndarray | None, n: int = 6) -> list[int]:
    """Axial slices through the centroids of the ``n`` most probable predicted enhancing lesions."""
    from scipy import ndimage

    if ras_mask is None or not ras_mask.any():
        return []
    labels, count = ndimage.label(ras_mask)
    weight = ras_prob if ras_prob is not None else ras_mask.astype(np.float32)
    peaks = ndimage.maximum(weight, labels, np.arange(1, count + 1))
    centres = ndimage.center_of_mass(ras_mask, labels, np.arange(1, count + 1))
    order = np.argsort(-np.asarray(peaks), kind="stable")[:n]
    return [round(float(centres[i][2])) for i in order]


def _scale(data: np.ndarray | None) -> np.ndarray | None:
    """An uncertainty map scaled to [0, 1] by its 99.9th percentile (entropies run to ln 2, variances 0.25)."""
    if data is None:
        return None
    top = window_range(data, data > 0, (0.0, 99.9))[1] if (data > 0).any() else 1.0
    return np.clip(data / max(top, 1e-9), 0, 1)


def _pictures(maps: CaseMaps, folder: Path) -> dict[str, str]:
    """Write the mosaics and input QC of a case into ``folder``; returns caption key -> file name."""
    ras = {k: figures.to_ras(v, maps.affine) for k, v in maps.images.items()}
    brain = figures.to_ras(maps.brain, maps.affine)
    enhancing = figures.to_ras(maps.enhancing, maps.affine) if maps.enhancing is not None else None
    if enhancing is None and maps.prob is not None:
        enhancing = figures.to_ras(maps.prob >= 0.5, maps.affine)
    lesions = figures.to_ras(maps.lesions, maps.affine) if maps.lesions is not None else None
    prob = figures.to_ras(maps.prob, maps.affine) if maps.prob is not None else None
    slices = figures.mosaic_slices(brain, _focus_slices(prob, enhancing))
    filled = {"enhancing": enhancing} if enhancing is not None else {}
    outlined = {"lesion": lesions} if lesions is not None else {}
    if maps.reference_lesions is not None:
        outlined["reference"] = figures.to_ras(maps.reference_lesions, maps.affine)
    what = "predicted enhancing (red), predicted lesions (cyan)" + (
        ", reference lesions (yellow)" if "reference" in outlined else ""
    )
    written: dict[str, str] = {}
    for role in ("FLAIR", "T1w"):
        if role in ras:
            name = f"mosaic-{role.lower()}.png"
            figures.mosaic_png(folder / name, ras[role], brain, slices, filled=filled, outlined=outlined,
                               title=f"{role}: {what}")  # fmt: skip
            written[role] = name
    background = ras.get("FLAIR", next(iter(ras.values())))
    if maps.uncertainty is not None:
        figures.mosaic_png(folder / "mosaic-uncertainty.png", background, brain, slices,
                           heat=_scale(figures.to_ras(maps.uncertainty, maps.affine)),
                           heat_label=f"{maps.uncertainty_name} (/ its 99.9th pct.)",
                           title=f"voxel uncertainty: {maps.uncertainty_name}")  # fmt: skip
        written["uncertainty"] = "mosaic-uncertainty.png"
    if "T1gd" in ras and "T1w" in ras:
        ref = figures.to_ras(maps.reference_enhancing, maps.affine) if maps.reference_enhancing is not None else None
        figures.mosaic_png(
            folder / "mosaic-subtraction.png",
            _standardised(ras["T1gd"], brain) - _standardised(ras["T1w"], brain),
            brain,
            slices,
            symmetric=True,
            outlined={"enhancing": ref} if ref is not None else {},
            title="post- minus pre-contrast T1w (z-scored in the brain); derived enhancing label (red)",
        )
        written["subtraction"] = "mosaic-subtraction.png"
    if len(ras) > 1 and "FLAIR" in ras:
        other = "T1w" if "T1w" in ras else next(k for k in ras if k != "FLAIR")
        figures.registration_png(folder / "registration.png", ras["FLAIR"], ras[other], brain, ("FLAIR", other))
        written["registration"] = "registration.png"
    figures.histogram_png(folder / "histograms.png", ras, brain)
    written["histograms"] = "histograms.png"
    return written


def _standardised(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    return zscore(image, brain if brain.any() else np.ones(image.shape, bool), outside=None)


def _copy(source: Path, target: Path) -> str:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target.name


def _prepare_pictures(files: CaseFiles, folder: Path) -> list[dict[str, str]]:
    """Copies of ``prepare``'s QC pictures of this case (found beside its derived masks)."""
    places = {p.parent for p in files.masks.values()}
    found = sorted({p for place in places for p in place.glob(f"{files.case_id}*_qc*.png")})
    return [{"file": _copy(p, folder / f"prepare-{p.name}"), "caption": p.name} for p in found]


def _explain_parts(explain: Path | None, files: CaseFiles, folder: Path) -> dict[str, Any]:
    """This case's attribution pictures and modality importance from an ``explain`` folder."""
    if explain is None:
        return {}
    rows = [r for r in read_rows(explain / "importance.tsv") if r.get("case_id") == files.case_id]
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["modality"]), []).append(float(r["importance"]))
    importance = [{"method": m, "modality": mod, "n_lesions": len(v), "mean": float(np.mean(v))}
                  for (m, mod), v in sorted(groups.items())]  # fmt: skip
    anat = derivative_path(explain, files.subject, files.session, "x").parent
    maps = sorted(anat.glob(f"{files.case_id}_desc-lesion*_attribution.png")) if anat.is_dir() else []
    pictures = [{"file": _copy(p, folder / f"explain-{p.name}"), "caption": p.name} for p in maps[:6]]
    overall = [{"file": _copy(explain / n, folder / f"explain-{n}"), "caption": n}
               for n in ("importance_summary.png", "separation_summary.png") if (explain / n).is_file()]  # fmt: skip
    return {"importance": importance, "maps": pictures, "overall": overall, "folder": str(explain)}


def _lesion_tables(predictions: Path, files: CaseFiles) -> dict[str, list[dict[str, Any]]]:
    enhancing = read_rows(derivative_path(predictions, files.subject, files.session, "lesions", ".tsv"))
    visible = read_rows(derivative_path(predictions, files.subject, files.session, "lesions", ".tsv", desc="all"))
    changes = read_rows(derivative_path(predictions, files.subject, files.session, "changes", ".tsv"))
    for rows, prefix in ((enhancing, "e"), (visible, "l"), (changes, "c")):
        for r in rows:
            r["key"] = f"{prefix}{r.get('lesion_id', '')}"
    return {"enhancing": enhancing, "visible": visible, "changes": changes}


def _viewer(maps: CaseMaps, tables: dict[str, list[dict[str, Any]]], folder: Path) -> None:
    from gdfree.io.colours import MASK_COLOURS
    from gdfree.report.viewer import ViewerVolume, write_viewer_data

    layers = [ViewerVolume(role, data, "image", visible=i == 0) for i, (role, data) in enumerate(maps.images.items())]
    if maps.prob is not None:
        layers.append(ViewerVolume("enhancing probability", maps.prob, "map", "warm", 0.8))
    if maps.enhancing is not None:
        layers.append(ViewerVolume("enhancing mask", maps.enhancing, "label", opacity=0.6, visible=False,
                                   rgb=MASK_COLOURS["enhancing"]))  # fmt: skip
    if maps.lesions is not None:
        layers.append(ViewerVolume("predicted lesions", maps.lesions, "label", opacity=0.35,
                                   rgb=MASK_COLOURS["lesion"]))  # fmt: skip
    if maps.reference_lesions is not None:
        layers.append(ViewerVolume("reference lesions", maps.reference_lesions, "label", opacity=0.35, visible=False,
                                   rgb=MASK_COLOURS["reference"]))  # fmt: skip
    if maps.uncertainty is not None:
        layers.append(ViewerVolume(maps.uncertainty_name, _scale(maps.uncertainty), "map", "plasma", 0.7,  # type: ignore[arg-type]
                                   visible=False))  # fmt: skip
    if maps.prior is not None:
        layers.append(ViewerVolume("prior FLAIR (registered)", maps.prior, "image", visible=False))
    if maps.new_prob is not None:
        layers.append(ViewerVolume("new-lesion probability (network)", maps.new_prob, "map", "warm", 0.8,
                                   visible=False))  # fmt: skip
    if maps.change is not None:
        for code, name, rgb in ((1, "new since the prior", (230, 30, 30)), (2, "enlarging", (255, 150, 0))):
            layers.append(ViewerVolume(f"lesions {name}", maps.change == code, "label", opacity=0.6, rgb=rgb))
    points = [{"key": r["key"], "mm": [float(r[f"centroid_{a}_mm"]) for a in "xyz"]}
              for rows in tables.values() for r in rows if all(r.get(f"centroid_{a}_mm") for a in "xyz")]  # fmt: skip
    write_viewer_data(folder / "viewer.js", layers, maps.affine, maps.brain, points)


def write_case_report(
    predictions: Path,
    files: CaseFiles,
    report: Path,
    *,
    row: dict[str, Any] | None = None,
    explain: Path | None = None,
    viewer: bool = True,
    cohort_link: str | None = None,
    slug: str | None = None,
    problems: Sequence[str] = (),
) -> Path:
    """Write ``report/<slug>.html`` and its folder ``report/<slug>/`` (``slug``: a file name for the case,
    default its id); returns the page's path.

    ``row`` is the case's ``predictions.tsv`` row (patient activity score and its uncertainty); ``problems``:
    what the page cannot show as predict wrote it (outputs missing or changed), stated at its top.

    Raises:
        GdfreeError: missing or unreadable predictions, or predictions on another grid than the inputs.
    """
    slug = slug or files.case_id
    folder = report / slug
    folder.mkdir(parents=True, exist_ok=True)
    maps = load_case_maps(predictions, files)
    tables = _lesion_tables(predictions, files)
    pictures = _pictures(maps, folder)
    if viewer:
        _viewer(maps, tables, folder)
    return render_page(
        "case.html.j2",
        report / f"{slug}.html",
        case_id=files.case_id,
        folder=slug,
        row=row or {},
        tables=tables,
        pictures=pictures,
        prepare=_prepare_pictures(files, folder),
        explain=_explain_parts(explain, files, folder),
        sources={k: str(v) for k, v in maps.sources.items()},
        lesions_source=maps.lesions_source,
        uncertainty_name=maps.uncertainty_name,
        viewer=viewer,
        cohort_link=cohort_link,
        problems=list(problems),
        voxel_mm=list(spacing_from_affine(maps.affine)),
        shape=list(maps.brain.shape),
    )
