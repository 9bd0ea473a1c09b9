"""Enhancing-label components judged like a radiologist would: veins and choroid plexus out, nodules in; a
rater's review kept across reruns of ``prepare``."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.io.images import file_sha256, read_volume, write_volume
from gdfree.preprocess.enhancing import EnhancingConfig, derive_enhancing
from gdfree.preprocess.prepare import PIPELINE, PrepareConfig, prepare_dataset
from gdfree.preprocess.qc import write_components_png
from gdfree.preprocess.review import read_review
from gdfree.types import Volume


def _scene(seed: int = 0) -> dict[str, np.ndarray]:
    """1 mm: lesion A holds an enhancing nodule; lesion B is crossed by an enhancing vein that runs 20 mm past it;
    lesion C has a vein along its border and, on its other side, an enhancing blob that is dark on FLAIR (choroid
    plexus in a ventricle that the lesion mask took in)."""
    rng = np.random.default_rng(seed)
    shape = (56, 56, 56)
    g = np.indices(shape).astype(float)
    brain = np.sqrt(((g - 27.5) ** 2).sum(0)) < 26

    def ball(centre: tuple[float, float, float], r: float) -> np.ndarray:
        return np.sqrt(sum((g[a] - centre[a]) ** 2 for a in range(3))) <= r

    lesion = ball((18, 28, 28), 5) | ball((36, 28, 28), 5) | ball((28, 16, 40), 4)
    pre = np.where(brain, 1000.0, 0.0)
    flair = pre.copy()
    pre[lesion], flair[lesion] = 700.0, 1600.0
    post = pre.copy()
    nodule = ball((18, 28, 28), 2.2)
    through = (np.sqrt((g[0] - 36) ** 2 + (g[2] - 29) ** 2) <= 0.9) & (np.abs(g[1] - 28) <= 20) & brain
    along = (np.sqrt((g[0] - 28) ** 2 + (g[1] - 12.3) ** 2) <= 1.0) & (np.abs(g[2] - 40) <= 7) & brain
    csf = ball((28, 19.5, 40), 2.2)  # the raters' mask took in the ventricle's edge
    pre[csf], flair[csf] = 300.0, 150.0
    post[csf] = 300.0
    for where in (nodule, through, along, csf):
        post[where] *= 1.6 if where is not csf else 4.0
    noisy = {n: (im + rng.normal(0, 20, shape) * brain).astype(np.float32)
             for n, im in (("pre", pre), ("post", post), ("flair", flair))}  # fmt: skip
    return {**noisy, "brain": brain, "lesion": lesion, "nodule": nodule, "through": through, "along": along,
            "csf": csf}  # fmt: skip


def _verdict_of(result, where: np.ndarray) -> dict:
    numbers = np.unique(result.candidates[where])
    numbers = numbers[numbers > 0]
    assert numbers.size == 1, f"expected one candidate there, got {numbers}"
    return result.components[int(numbers[0]) - 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_vein_through_a_lesion_is_rejected_and_a_nodule_kept(seed: int, tmp_path: Path):
    s = _scene(seed)
    result = derive_enhancing(s["pre"], s["post"], s["brain"], (1.0, 1.0, 1.0), s["lesion"], flair=s["flair"])
    nodule = _verdict_of(result, s["nodule"])
    assert nodule["verdict"] == "kept" and nodule["confidence"] > 0.6
    through = _verdict_of(result, s["through"] & s["lesion"])
    assert through["verdict"] == "rejected" and through["outside_fraction"] > 0.5
    assert through["reason"].split(":")[0] in ("continues outside", "elongated", "tubular")
    along = _verdict_of(result, s["along"])
    assert along["verdict"] == "rejected"
    csf = _verdict_of(result, s["csf"])
    assert csf["verdict"] == "rejected" and csf["reason"].startswith(("CSF-like", "edge"))
    assert result.mask[s["nodule"]].mean() > 0.8 and not (result.mask & (s["through"] | s["along"] | s["csf"])).any()
    without = derive_enhancing(s["pre"], s["post"], s["brain"], (1.0, 1.0, 1.0), s["lesion"],
                               EnhancingConfig(reject=False), flair=s["flair"])  # fmt: skip
    assert without.mask[s["through"] & s["lesion"]].any()  # the rules, not the threshold, removed the vein
    pages = write_components_png(tmp_path / "c.png", result, s["pre"], s["post"], flair=s["flair"],
                                 lesion=s["lesion"], per_page=2)  # fmt: skip
    assert len(pages) == -(-len(result.components) // 2) and all(p.read_bytes()[:4] == b"\x89PNG" for p in pages)


def _bids_case(root: Path, s: dict[str, np.ndarray]) -> CaseFiles:
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-27.5, -27.5, -27.5)
    anat = root / "sub-01" / "anat"
    files = {"T1w": ("pre", anat / "sub-01_T1w.nii.gz"), "T1gd": ("post", anat / "sub-01_ce-gadolinium_T1w.nii.gz"),
             "FLAIR": ("flair", anat / "sub-01_FLAIR.nii.gz")}  # fmt: skip
    for key, path in files.values():
        write_volume(Volume(s[key], affine), path)
    masks = {}
    for role, key, name in (("brain", "brain", "desc-brain"), ("lesion", "lesion", "label-lesion")):
        target = root / "derivatives" / "raters" / "sub-01" / "anat" / f"sub-01_{name}_mask.nii.gz"
        masks[role] = write_volume(Volume(s[key].astype(np.uint8), affine), target)
    return CaseFiles("01", None, {r: p for r, (_, p) in files.items()}, masks)


def test_reviewed_decisions_survive_a_rerun(tmp_path: Path):
    s = _scene(0)
    case = _bids_case(tmp_path / "raw", s)
    out = tmp_path / "prepared"
    cfg = PrepareConfig(register=False, n4=False, check_brain_mask=False)
    assert prepare_dataset([case], out, cfg).done == ["sub-01"]
    deriv = out / "derivatives" / PIPELINE
    table = derivative_path(deriv, "01", None, "components", ".tsv", desc="enhancing")
    mask_path = derivative_path(deriv, "01", None, "mask", label="enhancing")
    rows = read_review(table)
    assert {r["verdict"] for r in rows} == {"kept", "rejected"} and all(r["decision"] == "" for r in rows)
    candidates = read_volume(derivative_path(deriv, "01", None, "dseg", label="enhancing", desc="candidates")).data
    through = int(np.unique(candidates[s["through"] & s["lesion"]])[-1])
    nodule = int(np.unique(candidates[s["nodule"]])[-1])
    assert read_volume(mask_path).data[s["nodule"]].any()
    # a rater accepts the vein and rejects the nodule
    for row in rows:
        if int(row["component"]) in (through, nodule):
            row.update(decision="accept" if int(row["component"]) == through else "reject", rater="AB", note="test")
    review = derivative_path(deriv, "01", None, "review", ".tsv", desc="enhancing")
    with review.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    before = file_sha256(review)
    record = derivative_path(deriv, "01", None, "prepare", ".json")
    stamp = record.stat().st_mtime_ns, read_volume(out / "sub-01" / "anat" / "sub-01_T1w.nii.gz").data.sum()
    outcome = prepare_dataset([case], out, cfg)
    assert outcome.reviewed == ["sub-01"], outcome  # a new review: applied, nothing redone
    assert (out / "sub-01" / "anat" / "sub-01_T1w.nii.gz").stat().st_mtime_ns < record.stat().st_mtime_ns
    assert stamp[0] < record.stat().st_mtime_ns
    reviewed = read_volume(mask_path).data > 0
    assert reviewed[s["through"] & s["lesion"]].any() and not reviewed[s["nodule"]].any()
    after = {int(r["component"]): r for r in read_review(table)}
    assert after[through]["reason"].startswith("reviewed: accepted by AB") and after[nodule]["verdict"] == "rejected"
    assert after[through]["rule_verdict"] == "rejected" and after[nodule]["rule_verdict"] == "kept"
    # the cheap path gives what preparing the case again with the review gives
    fresh = tmp_path / "fresh"
    assert prepare_dataset([case], fresh, cfg).done == ["sub-01"]
    shutil.copy(review, derivative_path(fresh / "derivatives" / PIPELINE, "01", None, "review", ".tsv",
                                        desc="enhancing"))  # fmt: skip
    shutil.rmtree(fresh / "sub-01")
    assert prepare_dataset([case], fresh, cfg).done == ["sub-01"]
    again = read_volume(derivative_path(fresh / "derivatives" / PIPELINE, "01", None, "mask", label="enhancing"))
    assert np.array_equal(again.data > 0, reviewed)
    assert prepare_dataset([case], out, cfg).skipped == ["sub-01"]  # same review: nothing to redo
    assert file_sha256(review) == before  # prepare never writes the rater's file
    # a rerun from scratch (the derived files gone) still honours it
    shutil.rmtree(out / "sub-01")
    assert prepare_dataset([case], out, cfg).done == ["sub-01"]
    assert (read_volume(mask_path).data > 0)[s["through"] & s["lesion"]].any()
    assert prepare_dataset([case], out, cfg).unmatched_review == {}
    # a row far from every candidate: counted in the result (the CLI prints it and exits 1), not only in the record
    with review.open("a") as fh:
        fh.write("\t".join("reject" if k == "decision" else ("90" if k.endswith("_mm") else "")
                           for k in rows[0]) + "\n")  # fmt: skip
    assert prepare_dataset([case], out, cfg).unmatched_review == {"sub-01": 1}
    review.write_text("x_mm\ty_mm\tz_mm\tdecision\n1\t2\t3\tmaybe\n")
    failed = prepare_dataset([case], out, cfg).failed
    assert "decision must be accept or reject" in failed["sub-01"] and str(review) in failed["sub-01"]
