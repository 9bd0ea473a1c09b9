"""Which input modality drives the prediction of enhancement, per lesion, per patient and per cohort.

Three families, each giving one number per (lesion, modality), in units of the head's mean logit over
the lesion (positive = the modality is evidence FOR enhancement there):

- occlusion: the target on the real image minus the target with one modality replaced by its in-brain
  mean (``mean``: 0 after z-scoring, no contrast left), by what an empty acquisition would give (``zeros``:
  raw intensity 0 pushed through the case's normalisation), by z-scored Gaussian noise (``noise``) or by a
  Gaussian-blurred copy (``blur``: keeps coarse contrast, removes patterns finer than ``blur_mm``);
- permutation: the same with the modality taken from another patient of the cohort (same grid needed);
- integrated gradients (Captum) of the lesion target from the all-zero (in-brain mean) image, summed over
  each channel of a crop around the lesion; the channel sums add up to target(image) - target(zeros).

Occlusion and permutation run whole volumes, one forward pass per (modality, replacement) for all lesions
of a case at once. :func:`summarise` pools the rows per modality and method with a patient-level
bootstrap CI (patients resampled, their lesions pooled) and ranks the modalities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from gdfree.data.cases import ArrayCase
from gdfree.explain.targets import region_logit
from gdfree.train.splits import derangement

__all__ = [
    "OCCLUSIONS",
    "bar_chart",
    "ig_importance",
    "ig_rows",
    "occluded",
    "occlusion_importance",
    "permutation_importance",
    "summarise",
]

OCCLUSIONS = ("mean", "zeros", "noise", "blur")


def occluded(
    case: ArrayCase,
    channel: int,
    mode: str,
    *,
    raw_zero: Sequence[float] | None = None,
    blur_mm: float = 4.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A copy of ``case.image`` with one channel replaced as ``mode`` says (see the module docstring).

    ``raw_zero``: per channel, the normalised value of raw intensity 0 (needed for ``zeros``).

    Raises:
        ValueError: unknown mode, or ``zeros`` without ``raw_zero``.
    """
    from scipy import ndimage

    image = case.image.copy()
    brain = case.brain
    if mode == "mean":
        image[channel][brain] = float(case.image[channel][brain].mean())
    elif mode == "zeros":
        if raw_zero is None:
            raise ValueError("occlusion 'zeros' needs the normalised value of raw intensity 0 (raw_zero)")
        image[channel][brain] = float(raw_zero[channel])
    elif mode == "noise":
        rng = rng or np.random.default_rng(0)
        image[channel][brain] = rng.standard_normal(int(brain.sum())).astype(np.float32)
    elif mode == "blur":
        sigma = [blur_mm / s for s in case.spacing_mm]
        weight = ndimage.gaussian_filter(brain.astype(np.float32), sigma)
        smooth = ndimage.gaussian_filter(np.where(brain, case.image[channel], 0.0), sigma)
        image[channel][brain] = (smooth[brain] / np.maximum(weight[brain], 1e-6)).astype(np.float32)
    else:
        raise ValueError(f"occlusion mode: expected one of {', '.join(OCCLUSIONS)}, got {mode!r}")
    return image


def _logits(model: nn.Module, image: np.ndarray, head: int, device: Any) -> np.ndarray:
    from gdfree.models.forward import predict_volume

    return predict_volume(model, image, device, logits_only=True)[head]


def occlusion_importance(
    model: nn.Module,
    case: ArrayCase,
    labels: np.ndarray,
    n: int,
    modalities: Sequence[str],
    *,
    head: int = 0,
    modes: Sequence[str] = OCCLUSIONS,
    raw_zero: Sequence[float] | None = None,
    blur_mm: float = 4.0,
    seed: int = 0,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Rows (case_id, lesion_id, modality, method ``occlusion-<mode>``, importance) for lesions 1..n."""
    if n == 0:
        return []
    model.eval()
    base = region_logit(_logits(model, case.image, head, device), labels, n)
    rng = np.random.default_rng(seed)
    rows = []
    for mode in modes:
        for c, modality in enumerate(modalities):
            image = occluded(case, c, mode, raw_zero=raw_zero, blur_mm=blur_mm, rng=rng)
            drop = base - region_logit(_logits(model, image, head, device), labels, n)
            rows += [{"case_id": case.case_id, "lesion_id": i + 1, "modality": modality,
                      "method": f"occlusion-{mode}", "importance": float(d)} for i, d in enumerate(drop)]  # fmt: skip
    return rows


def permutation_importance(
    model: nn.Module,
    cases: Sequence[ArrayCase],
    lesions: Sequence[tuple[np.ndarray, int]],
    modalities: Sequence[str],
    *,
    head: int = 0,
    repeats: int = 1,
    seed: int = 0,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Rows (method ``permutation``) for every lesion of every case: the drop of its target when one modality
    comes from another patient (a random derangement of the cases, ``repeats`` of them averaged).

    Raises:
        ValueError: fewer than 2 cases, or cases on different grids.
    """
    if len(cases) < 2:
        raise ValueError("permutation importance needs at least 2 cases")
    shapes = {c.image.shape[1:] for c in cases}
    if len(shapes) > 1:
        raise ValueError(f"permutation importance needs cases on one grid (e.g. MNI); got shapes {sorted(shapes)}")
    model.eval()
    rng = np.random.default_rng(seed)
    orders = [derangement(len(cases), rng) for _ in range(repeats)]
    rows = []
    for k, (case, (labels, n)) in enumerate(zip(cases, lesions, strict=True)):
        if n == 0:
            continue
        base = region_logit(_logits(model, case.image, head, device), labels, n)
        for c, modality in enumerate(modalities):
            drops = []
            for order in orders:
                image = case.image.copy()
                image[c] = cases[int(order[k])].image[c]
                drops.append(base - region_logit(_logits(model, image, head, device), labels, n))
            mean = np.mean(drops, axis=0)
            rows += [{"case_id": case.case_id, "lesion_id": i + 1, "modality": modality, "method": "permutation",
                      "importance": float(d)} for i, d in enumerate(mean)]  # fmt: skip
    return rows


def ig_importance(
    model: nn.Module,
    case: ArrayCase,
    labels: np.ndarray,
    n: int,
    modalities: Sequence[str],
    *,
    head: int = 0,
    crop: int = 48,
    steps: int = 32,
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Rows (method ``ig``) for lesions 1..n: integrated gradients of each lesion's target on a cube of
    ``crop`` voxels around it, summed per modality (see :func:`gdfree.explain.maps.lesion_maps`)."""
    from gdfree.explain.maps import lesion_maps

    rows = []
    for i in range(1, n + 1):
        maps = lesion_maps(model, case, labels == i, head=head, methods=("ig",), crop=crop, steps=steps,
                           device=device)  # fmt: skip
        rows += ig_rows(case.case_id, i, modalities, maps["ig"])
    return rows


def ig_rows(case_id: str, lesion_id: int, modalities: Sequence[str], ig_map: np.ndarray) -> list[dict[str, Any]]:
    """Importance rows (method ``ig``) from one lesion's (C, X, Y, Z) integrated-gradients map: its per-modality
    sums, which add up to target(image) - target(zeros)."""
    sums = ig_map.reshape(len(modalities), -1).sum(axis=1)
    return [{"case_id": case_id, "lesion_id": lesion_id, "modality": m, "method": "ig", "importance": float(v)}
            for m, v in zip(modalities, sums, strict=True)]  # fmt: skip


def _bootstrap_mean(units: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Pooled means of ``values`` (grouped by ``units``, indices into the columns of ``counts``) under each
    bootstrap draw; ``counts`` (draws, units) says how often each unit was drawn."""
    sums = np.bincount(units, values, minlength=counts.shape[1])
    nums = np.bincount(units, minlength=counts.shape[1]).astype(float)
    drawn = counts @ nums
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(drawn > 0, (counts @ sums) / np.maximum(drawn, 1), np.nan)


def summarise(
    rows: Sequence[dict[str, Any]],
    *,
    contrast: tuple[str, str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Per (group, method, modality): lesions, patients, mean importance with a patient-level bootstrap CI,
    the share of the summed absolute importance and the rank within (group, method) (1 = most important).
    Rows without a ``group`` key form the group ``all``.

    With ``contrast=(a, b)`` the table is instead the separation: group a's mean minus group b's, per method
    and modality. For a occlusion-type importance it says how much replacing the modality closes the gap
    between the logits of a (active) and b (inactive) lesions, i.e. how much the modality carries the
    activity signal rather than the presence of a lesion.

    The CI resamples patients with replacement and pools their lesions (lesions of one patient are not
    independent); with one patient it resamples lesions.
    """
    rng = np.random.default_rng(seed)
    quantiles = [(1 - level) / 2, (1 + level) / 2]
    out = []
    for method in sorted({r["method"] for r in rows}):
        sub = [r for r in rows if r["method"] == method]
        modalities = list(dict.fromkeys(r["modality"] for r in sub))
        by_unit = "case_id" if len({r["case_id"] for r in sub}) > 1 else "lesion_id"
        index = {u: i for i, u in enumerate(sorted({r[by_unit] for r in sub}))}
        draws = rng.integers(0, len(index), size=(n_boot, len(index)))
        counts = np.stack([np.bincount(d, minlength=len(index)) for d in draws])  # (n_boot, units)
        groups = [contrast] if contrast else [(g,) for g in dict.fromkeys(r.get("group", "all") for r in sub)]
        for group in groups:
            table = []
            for modality in modalities:
                means, boots, n_lesions, patients = [], [], 0, set()
                for g in group:
                    mine = [r for r in sub if r["modality"] == modality and r.get("group", "all") == g]
                    value = np.array([r["importance"] for r in mine], dtype=float)
                    unit = np.array([index[r[by_unit]] for r in mine], dtype=int)
                    means.append(float(value.mean()) if value.size else float("nan"))
                    boots.append(_bootstrap_mean(unit, value, counts))
                    n_lesions += value.size
                    patients |= {r["case_id"] for r in mine}
                mean = means[0] - means[1] if contrast else means[0]
                boot = boots[0] - boots[1] if contrast else boots[0]
                lo, hi = np.nanquantile(boot, quantiles) if np.isfinite(boot).any() else (np.nan, np.nan)
                table.append({"group": " - ".join(group), "method": method, "modality": modality,
                              "lesions": int(n_lesions), "patients": len(patients), "mean": mean,
                              "ci_low": float(lo), "ci_high": float(hi)})  # fmt: skip
            total = sum(abs(t["mean"]) for t in table if t["mean"] == t["mean"]) or 1.0
            ranked = sorted(table, key=lambda t: -t["mean"] if t["mean"] == t["mean"] else np.inf)
            for rank, t in enumerate(ranked, start=1):
                t["share"] = abs(t["mean"]) / total
                t["rank"] = rank
            out += table
    return out


def bar_chart(summary: Sequence[dict[str, Any]], path: Any, title: str = "Modality importance") -> Any:
    """A grid of panels, one row per lesion group and one column per method: mean importance per modality
    with its CI (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gdfree.io.images import save_figure

    groups = list(dict.fromkeys(s.get("group", "all") for s in summary))
    methods = list(dict.fromkeys(s["method"] for s in summary))
    fig, axes = plt.subplots(len(groups), len(methods), figsize=(2.4 * len(methods) + 0.8, 2.6 * len(groups) + 0.4),
                             squeeze=False)  # fmt: skip
    for (g, group), (m, method) in ((a, b) for a in enumerate(groups) for b in enumerate(methods)):
        ax = axes[g][m]
        rows = [s for s in summary if (s.get("group", "all"), s["method"]) == (group, method)]
        if not rows:
            ax.axis("off")
            continue
        means = np.array([r["mean"] for r in rows])
        err = np.array([[r["mean"] - r["ci_low"] for r in rows], [r["ci_high"] - r["mean"] for r in rows]])
        ax.bar(range(len(rows)), means, yerr=err, color=["#c0504d" if v > 0 else "#4f81bd" for v in means],
               capsize=3)  # fmt: skip
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(range(len(rows)), [r["modality"] for r in rows], fontsize=8)
        ax.set_title(method if group == "all" else f"{method}\n{group}", fontsize=8)
    for g in range(len(groups)):
        axes[g][0].set_ylabel("drop of the mean logit\nin the lesion", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
