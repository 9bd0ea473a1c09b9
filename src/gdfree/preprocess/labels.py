"""The enhancing labels inside ``prepare``: derived from the prepared images (:mod:`gdfree.preprocess.enhancing`),
with a rater's review applied, written with their components table, candidate map and QC pictures; and applied
again from those files alone when only the review changed (:func:`reapply_review`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.io.images import file_sha256, read_volume, write_volume
from gdfree.io.tables import write_tsv
from gdfree.preprocess.enhancing import COMPONENT_COLUMNS, EnhancingConfig, EnhancingResult, derive_enhancing
from gdfree.preprocess.layout import PIPELINE, record_path, review_path
from gdfree.preprocess.qc import write_components_png, write_qc_png
from gdfree.preprocess.record import PrepareRecord
from gdfree.preprocess.review import apply_review, read_review
from gdfree.types import POST_CONTRAST, Volume

__all__ = ["enhancing_labels", "reapply_review", "write_enhancing"]


def enhancing_labels(
    case: CaseFiles,
    enhancing: EnhancingConfig,
    out: Path,
    resampled: dict[str, np.ndarray],
    brain: np.ndarray,
    lesion: np.ndarray | None,
    affine: np.ndarray,
) -> tuple[np.ndarray, dict[str, Any], dict[str, str]]:
    """Derive the enhancing label, apply a rater's review if there is one and write the components table, the
    candidate labels and the QC pictures; returns (mask, derivation info, written files)."""
    spacing = Volume(np.zeros((1, 1, 1)), affine).spacing_mm
    result = derive_enhancing(resampled["T1w"], resampled[POST_CONTRAST], brain, spacing, lesion, enhancing,
                              flair=resampled.get("FLAIR"), affine=affine)  # fmt: skip
    files = write_enhancing(case, enhancing, out, result, resampled, lesion, affine, review_path(out, case))
    return result.mask, result.info, files


def write_enhancing(
    case: CaseFiles,
    enhancing: EnhancingConfig,
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
    where: dict[str, Any] = {"subject": case.subject, "session": case.session}
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
                       f"{enh['n_rejected']} rejected (blue) (k {enhancing.k}, region {enh['region']})",
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


def reapply_review(out: Path | str, case: CaseFiles, enhancing: EnhancingConfig | None = None) -> PrepareRecord:
    """Apply a changed rater's review to a prepared case without redoing it: the rules' verdicts come back from
    the components table (``rule_*`` columns), the candidates from their label map, the subtraction from the
    written T1w images (so only for ``normalise: none``; ``prepare`` redoes a normalised case); the enhancing
    mask, the table, the QC pictures and ``_prepare.json`` are rewritten. Returns the new record."""
    enhancing = enhancing or EnhancingConfig()
    out = Path(out)
    stem = record_path(out, case)
    record = PrepareRecord.read(stem)
    outputs = record.outputs
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
    enh = {k: v for k, v in (record.enhancing or {}).items() if k != "review"}
    diff = np.where(brain, images[POST_CONTRAST] / enh["post_nawm_mode"] - images["T1w"] / enh["pre_nawm_mode"],
                    0.0).astype(np.float32)  # fmt: skip
    result = EnhancingResult(keep[labels], diff, labels, components, enh)
    lesion = read_volume(out / outputs["mask_lesion"]).data > 0 if "mask_lesion" in outputs else None
    files = write_enhancing(case, enhancing, out, result, images, lesion, candidates.affine, review_path(out, case))
    write_volume(Volume(result.mask.astype(np.uint8), candidates.affine), out / outputs["mask_enhancing"])
    record = record.updated(enhancing=result.info, outputs={**record.outputs, **files})
    record.write(stem)
    return record


def _number(cell: str) -> int | float | None:
    """A numeric TSV cell as written by :func:`gdfree.io.tables.write_tsv` (``n/a``: None)."""
    if cell in ("", "n/a"):
        return None
    value = float(cell)
    return int(value) if value.is_integer() and "." not in cell and "e" not in cell.lower() else value
