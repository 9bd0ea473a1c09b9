"""The cohort tables and charts of an explanation: per-lesion rows grouped, summarised with patient-bootstrap CIs,
the active-minus-inactive separation, lesion-centred profiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gdfree.explain.importance import summarise
from gdfree.explain.patterns import cohort_profiles
from gdfree.io.tables import write_tsv

__all__ = ["CONTRASTS", "write_tables"]


CONTRASTS = (("reference active", "reference inactive"), ("predicted active", "predicted inactive"))
"""Group pairs whose difference of importance is reported as the separation (active minus inactive)."""


def write_tables(out: Path, explained: Sequence[Any], rows: list[dict[str, Any]], opts: Any) -> dict[str, Any]:
    """The cohort tables and charts of an explanation (``explained``: each case's results, ``opts``: the run's
    options, from :mod:`gdfree.explain.run`); returns the rows the caller reports."""
    lesion_rows = [r for e in explained for r in e.lesion_rows]
    sanity_rows = [r for e in explained for r in e.sanity]
    profile_entries = [r for e in explained for r in e.profiles]
    group_of = {(r["case_id"], r["lesion_id"]): r["group"] for r in lesion_rows}
    for row in rows:
        row["group"] = group_of[(row["case_id"], row["lesion_id"])]
    summary = summarise(rows, seed=opts.seed) if rows else []
    present = {r["group"] for r in rows}
    pair = next(((a, b) for a, b in CONTRASTS if a in present and b in present), None)
    separation = summarise(rows, contrast=pair, seed=opts.seed) if pair else []
    profiles = cohort_profiles(profile_entries, opts.bins_mm) if profile_entries else []
    write_tsv(out / "lesions.tsv", lesion_rows)
    write_tsv(out / "importance.tsv", rows)
    write_tsv(out / "importance_summary.tsv", summary)
    write_tsv(out / "separation_summary.tsv", separation)
    write_tsv(out / "profiles.tsv", profiles)
    write_tsv(out / "sanity.tsv", sanity_rows)
    if summary:
        from gdfree.explain.importance import bar_chart

        bar_chart(summary, out / "importance_summary.png", title=f"Modality importance, {len(lesion_rows)} "
                  f"{opts.source} lesions of {len(explained)} cases")  # fmt: skip
        if separation:
            bar_chart(separation, out / "separation_summary.png",
                      title="Separation: importance on active minus inactive lesions")  # fmt: skip
    if profiles:
        from gdfree.explain.patterns import profile_png

        profile_png(profiles, out / "profiles.png")
    return {"summary": summary, "separation": separation, "sanity": sanity_rows, "profiles": profiles,
            "lesions": lesion_rows}  # fmt: skip
