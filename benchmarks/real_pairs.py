"""Learning new lesions from the real pairs too (issue 32): leave one real patient out.

The three open_ms_data longitudinal patients (FLAIR at both studies, a three-rater change mask) become a training
dataset at the pair network's 2 mm: study 2's FLAIR, deepbet's brain mask and the prior-exam images
``benchmarks/pair_network.py`` wrote (``WORK/real-bids``, ``WORK/real-pairs``), resampled trilinearly (masks:
> 0.5 of the resampled mask), and a ``label-new_mask`` of the *brighter* changes only: the components of the change
mask (on study 2's grid, inside the brain) whose mean FLAIR difference is above 0. The change masks also mark
lesions that shrank or faded, which a new-lesion head must not learn to call new.

For each held-out patient, the FLAIR-only pair network trained on phantom pairs (``--init``) is fine-tuned for
``--steps`` steps on the phantom pairs (half the patches) and the other two real patients (the other half; their
``new`` head only: no enhancing or lesion label, no gradient there), then scored on the held-out patient's native
exam through ``predict --prior``'s path by ``pair_network.real`` (the network runs at its 2 mm): changes found,
false detections, against the phantom-only network and the subtraction on the same patient.

    python benchmarks/real_pairs.py --init /tmp/np/run_flair --phantom-config /tmp/np/train_flair.yaml \\
        --real ../shared/data/open_ms_data/longitudinal/raw --work /tmp/np --steps 300 --out /tmp/np/real_pairs.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from gdfree.infer.grid import model_grid_shape, resample_channels
from gdfree.io.images import read_mask, read_volume, to_sitk, write_volume
from gdfree.types import Volume

_spec = importlib.util.spec_from_file_location("pair_network", Path(__file__).with_name("pair_network.py"))
assert _spec is not None and _spec.loader is not None
pair_network = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pair_network)
long = pair_network.long

SPACING = (2.0, 2.0, 2.0)


def _to_grid(vol: Volume, data: np.ndarray | None = None, mask: bool = False) -> Volume:
    """``vol`` (or ``data`` on its grid) resampled to :data:`SPACING` over the same extent, as
    :func:`gdfree.infer.grid.on_model_grid` moves an exam to a model's grid (voxel areas aligned)."""
    arr = np.asarray(vol.data if data is None else data, np.float32)
    shape = model_grid_shape(arr.shape, vol.spacing_mm, SPACING)
    out = resample_channels(arr[None], shape)[0]
    scale = np.array(arr.shape, float) / np.array(shape, float)
    step = np.diag([*scale, 1.0])
    step[:3, 3] = 0.5 * scale - 0.5  # the centre of new voxel 0 in old voxel coordinates
    affine = vol.affine @ step
    return Volume((out > 0.5).astype(np.uint8) if mask else out, affine)


def increases(gt: np.ndarray, difference: np.ndarray) -> np.ndarray:
    """The components of the change mask ``gt`` whose mean difference (follow-up minus prior) is above 0."""
    from scipy import ndimage

    labels, n = ndimage.label(gt)
    if n == 0:
        return np.zeros(gt.shape, bool)
    means = np.atleast_1d(ndimage.mean(difference, labels, np.arange(1, n + 1)))
    return np.isin(labels, np.flatnonzero(means > 0) + 1)


def build(real: Path, work: Path) -> tuple[Path, Path, dict[str, dict[str, int]]]:
    """The 2 mm training dataset and pairs folder under WORK (``real2-bids``, ``real2-pairs``)."""
    bids, pairs = work / "real-bids", work / "real-pairs"
    out_bids, out_pairs = work / "real2-bids", work / "real2-pairs"
    counts = {}
    for folder in sorted(p for p in real.glob("patient*") if p.is_dir()):
        sub, stem = f"sub-long{folder.name}", f"sub-long{folder.name}_ses-2"
        flair = read_volume(bids / sub / "ses-2" / "anat" / f"{stem}_FLAIR.nii.gz")
        brain = read_mask(bids / "derivatives" / "brain" / sub / "ses-2" / "anat" / f"{stem}_desc-brain_mask.nii.gz")
        prior = read_volume(pairs / sub / "ses-2" / "anat" / f"{stem}_desc-prior_FLAIR.nii.gz")
        diff = read_volume(pairs / sub / "ses-2" / "anat" / f"{stem}_desc-FLAIRdifference_map.nii.gz")
        raw_flair = read_volume(folder / "study2_FLAIR.nii.gz")
        gt = long._to_followup(folder / "gt.nii.gz", to_sitk(raw_flair), folder / "study2_FLAIR_to_common_space.txt")
        gt &= brain.data > 0
        new = increases(gt, np.asarray(diff.data, np.float32))
        counts[folder.name] = {"changes": int(_components(gt)), "brighter": int(_components(new))}
        anat, deriv = out_bids / sub / "ses-2" / "anat", out_bids / "derivatives" / "real" / sub / "ses-2" / "anat"
        write_volume(_to_grid(flair), anat / f"{stem}_FLAIR.nii.gz")
        write_volume(_to_grid(brain, mask=True), deriv / f"{stem}_desc-brain_mask.nii.gz")
        write_volume(_to_grid(flair, new, mask=True), deriv / f"{stem}_label-new_mask.nii.gz")
        panat = out_pairs / sub / "ses-2" / "anat"
        write_volume(_to_grid(prior), panat / f"{stem}_desc-prior_FLAIR.nii.gz")
        write_volume(_to_grid(diff), panat / f"{stem}_desc-FLAIRdifference_map.nii.gz")
    (out_bids / "dataset_description.json").write_text(json.dumps({"Name": "real follow-ups, 2 mm",
                                                                   "BIDSVersion": "1.9.0"}))  # fmt: skip
    return out_bids, out_pairs, counts


def _components(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask)[1])


def fine_tune(args: argparse.Namespace, held_out: str, bids2: Path, pairs2: Path) -> Path:
    """Fine-tune ``--init`` on the phantom pairs and the two other real patients; returns the run folder."""
    cfg = yaml.safe_load(args.phantom_config.read_text())
    phantom = {**cfg["datasets"][0], "share": 0.5}
    real = {"path": str(bids2), "labels": ["new"], "pairs": str(pairs2), "share": 0.5}
    held = f"{bids2}:long{held_out}"
    cfg.update({"datasets": [phantom, real], "init": str(args.init), "max_steps": args.steps,
                "val_every": args.steps, "warmup_steps": 20, "lr": args.lr, "time_budget_s": 0})  # fmt: skip
    cfg["split"] = {**cfg["split"], "test_subjects": [*cfg["split"]["test_subjects"], held]}
    run = args.work / f"real-ft-{held_out}"
    config = args.work / f"real-ft-{held_out}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    if not (run / "model.json").is_file():
        subprocess.run([sys.executable, "-m", "gdfree", "train", str(config), "--out", str(run)], check=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", type=Path, required=True)
    parser.add_argument("--phantom-config", type=Path, required=True)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bids2, pairs2, counts = build(args.real, args.work)
    result: dict[str, Any] = {"steps": args.steps, "lr": args.lr, "init": str(args.init), "labels": counts,
                              "held_out": {}}  # fmt: skip
    scoring = SimpleNamespace(real=args.real, work=args.work)
    base = {r["patient"]: r for r in pair_network.real(scoring, [args.init])[args.init.name]}  # type: ignore[arg-type]
    for folder in sorted(p for p in args.real.glob("patient*") if p.is_dir()):
        run = fine_tune(args, folder.name, bids2, pairs2)
        rows = {r["patient"]: r for r in pair_network.real(scoring, [run])[run.name]}  # type: ignore[arg-type]
        result["held_out"][folder.name] = {"fine_tuned": rows[folder.name], "phantom_only": base[folder.name]}
        print(folder.name, json.dumps(result["held_out"][folder.name]), flush=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
