"""The headline table of an evaluation, for the terminal (rich) and for reports."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["compact_headline", "headline", "print_summary"]


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def threshold_text(value: float) -> str:
    """A threshold with as many digits as it takes not to read as 0 or 1 when it is neither (0.99999, not 1)."""
    for digits in range(3, 13):
        text = f"{value:.{digits}g}"
        if float(text) not in (0.0, 1.0) or value in (0.0, 1.0):
            return text
    return repr(value)


def _ci(value: Any, ci: Any) -> str:
    low, high = ci if ci is not None else (None, None)
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def headline(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, value, how it was computed) rows: the numbers a paper's results table would quote."""
    per_case = summary["per_case"]
    pooled = summary["pooled_lesions"]
    rule = summary["config"]["rule"]
    rule_text = f"{rule['name']} rule, {rule['connectivity']}-connected, > {rule['min_volume_mm3']:g} mm3"
    rows = []

    def mean(key: str, label: str, note: str = "mean over cases") -> None:
        if key in per_case:
            d = per_case[key]
            undefined = f", {d['n_undefined']} undefined" if d["n_undefined"] else ""
            rows.append((label, f"{_num(d['mean'])} (median {_num(d['median'])})", f"{note} (n={d['n']}{undefined})"))

    mean("dice", "Dice")
    mean("ndsc", "nDSC")
    mean("hd95_mm", "HD95 (mm)")
    f1 = _ci(pooled["lesion_f1"], pooled["lesion_f1_ci"]) if "lesion_f1_ci" in pooled else _num(pooled["lesion_f1"])
    rows.append(("Lesion F1", f1, f"pooled over {summary['n_cases']} cases, patient-bootstrap 95% CI; {rule_text}"))
    rows.append((
        "Lesion sensitivity / precision",
        f"{_num(pooled['lesion_sensitivity'])} / {_num(pooled['lesion_precision'])}",
        f"{pooled['lesion_tp_ref']}/{pooled['n_ref_lesions']} detected, "
        f"{pooled['lesion_tp_pred']}/{pooled['n_pred_lesions']} predicted lesions true",
    ))  # fmt: skip
    rows.append(("False-positive lesions / scan", _num(pooled["fp_per_scan"], 2), "at the prediction's mask"))
    mean("lesion_f1", "Lesion F1 (per case)")
    if "froc" in summary:
        at = summary["froc"]["sensitivity_at_fp"]
        points = "  ".join(f"{k}: {_num(v)}" for k, v in at.items())
        rows.append(("FROC sensitivity @ FP/scan", points, "highest sensitivity with at most that many FP/scan"))
    if "patient" in summary:
        p = summary["patient"]
        rows.append(("Patient AUC", _ci(p["auc"], p["auc_ci"]),
                     f"{p['n_active']} active, {p['n_inactive']} inactive; score {p['score']}; "
                     f"bootstrap 95% CI, {p['n_boot']} resamples, seed {p['seed']}"))  # fmt: skip
        rows.append((
            "Patient sensitivity / specificity",
            f"{_ci(p['sensitivity'], p['sensitivity_ci'])} / {_ci(p['specificity'], p['specificity_ci'])}",
            f"score >= {threshold_text(p['threshold'])}",
        ))  # fmt: skip
    if "calibration" in summary:
        c = summary["calibration"]
        rows.append(("ECE, every voxel", _num(c["ece"], 4),
                     f"{c['n_bins']} bins, voxels pooled (in the brain mask if given): the background dominates"))
        if "ece_p_ge_0.1" in c:
            rows.append(("ECE, voxels with p >= 0.1", _num(c["ece_p_ge_0.1"], 4),
                         "the voxels the model calls at least 10% likely"))
        gap = c.get("largest_gap")
        if gap:
            rows.append(("Largest calibration gap", _num(gap["gap"], 3),
                         f"bin {gap['bin_low']:g}-{gap['bin_high']:g}: predicts {_num(gap['mean_prob'])}, observed "
                         f"{_num(gap['positive_fraction'])} ({gap['count']} voxels)"))  # fmt: skip
    for part, label in (("reference_lesions", "reference"), ("scored_lesions", "scored")):
        a = summary.get("lesion_activity", {}).get(part)
        if a and a["n_lesions"]:
            rows.append((f"Lesion activity AUC / F1 ({label} lesions)",
                         f"{_ci(a['auc'], a['auc_ci'])} / {_ci(a['f1'], a['f1_ci'])}",
                         f"{a['n_active']}/{a['n_lesions']} active, {a['n_patients']} patients"))  # fmt: skip
    mean("retention_auc", "nDSC R-AUC", "mean over cases (lower is better)")
    mean("retention_auc_probability", "nDSC R-AUC, probability alone",
         "the same, voxels ordered by the binary entropy of the probability: what the uncertainty must beat")
    if "retention_gain" in summary:
        g = summary["retention_gain"]
        rows.append(("R-AUC gain over the probability", _ci(g["mean"], g["ci"]),
                     f"probability's R-AUC minus the uncertainty's, mean over {g['n']} cases, bootstrap 95% CI; "
                     "above 0: the uncertainty adds to the probability"))  # fmt: skip
    mean("synth_ssim", "Synthetic T1gd SSIM")
    mean("synth_psnr_db", "Synthetic T1gd PSNR (dB)")
    return rows


def compact_headline(summary: dict[str, Any], width: int = 78) -> list[str]:
    """The few numbers that answer "does it work", one per line, each at most ``width`` characters (78: an
    80-column terminal with the demo's indent)."""
    pooled = summary["pooled_lesions"]
    rule = summary["config"]["rule"]
    lines = [f"Enhancing-lesion F1     {_ci(pooled['lesion_f1'], pooled.get('lesion_f1_ci'))}  "
             f"({rule['name']} rule, {pooled['n_ref_lesions']} lesions)",
             f"Lesion sens. / prec.    {_num(pooled['lesion_sensitivity'])} / {_num(pooled['lesion_precision'])}, "
             f"{_num(pooled['fp_per_scan'], 2)} false positives / scan"]  # fmt: skip
    if "froc" in summary:
        lines.append(f"Sensitivity @ 1 FP/scan {_num(summary['froc']['sensitivity_at_fp'].get('1.0'))}")
    if "patient" in summary:
        p = summary["patient"]
        lines.append(f"Patient AUC             {_ci(p['auc'], p['auc_ci'])}  ({p['n_active']} active, "
                     f"{p['n_inactive']} not)")  # fmt: skip
        lines.append(f"Patient sens. / spec.   {_num(p['sensitivity'])} / {_num(p['specificity'])}  "
                     f"({p['score']} score >= {threshold_text(p['threshold'])})")  # fmt: skip
    a = summary.get("lesion_activity", {}).get("reference_lesions")
    if a and a["n_lesions"]:
        lines.append(f"Lesion activity AUC     {_ci(a['auc'], a['auc_ci'])}  ({a['n_active']}/{a['n_lesions']} "
                     "visible lesions active)")  # fmt: skip
        lines.append(f"Lesion activity F1      {_ci(a['f1'], a['f1_ci'])}")
    return [line if len(line) <= width else line[: width - 3] + "..." for line in lines]


def print_summary(summary: dict[str, Any], console: Any, title: str = "Evaluation") -> None:
    """Print the headline table and the per-volume-bin detection table."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("metric", "value", "how"):
        table.add_column(col, overflow="fold")
    for row in headline(summary):
        table.add_row(*row)
    console.print(table)
    bins = Table(title="Lesion detection by reference / predicted lesion volume")
    for col in ("volume (mm3)", "ref lesions", "detected", "sensitivity", "pred lesions", "FP", "precision"):
        bins.add_column(col, justify="right")
    for b in summary["by_volume"]:
        bins.add_row(b["volume_bin"], str(b["n_ref_lesions"]), str(b["lesion_tp_ref"]), _num(b["lesion_sensitivity"]),
                     str(b["n_pred_lesions"]), str(b["lesion_fp"]), _num(b["lesion_precision"]))  # fmt: skip
    console.print(bins)
    for note in summary.get("notes", []):
        console.print(f"[yellow]note:[/] {note}", highlight=False)
