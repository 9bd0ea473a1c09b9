"""Quality-control pictures of the derived enhancing labels: slices of pre- and post-Gd T1w, their subtraction and
FLAIR with the kept components (:func:`write_qc_png`), and one panel per judged candidate
(:func:`write_components_png`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.arrays import window_range
from gdfree.io.images import save_figure
from gdfree.preprocess.enhancing import EnhancingResult

__all__ = ["write_components_png", "write_qc_png"]


def write_qc_png(
    path: Path | str,
    pre: np.ndarray,
    post: np.ndarray,
    diff: np.ndarray,
    mask: np.ndarray,
    title: str = "",
    rejected: np.ndarray | None = None,
) -> Path:
    """A QC picture: up to four axial slices (those with the most enhancing voxels, kept or ``rejected``, else
    evenly spaced through the brain), columns pre-Gd T1w, post-Gd T1w, subtraction, post-Gd with the mask
    outlined in red and rejected components in blue. Zoomed views of each component:
    :func:`write_components_png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = mask if rejected is None else mask | rejected
    per_slice = shown.sum(axis=(0, 1))
    if per_slice.any():
        slices = sorted(np.argsort(per_slice)[::-1][: min(4, int((per_slice > 0).sum()))].tolist())
    else:
        filled = np.flatnonzero(np.abs(pre).sum(axis=(0, 1)) > 0)
        lo, hi = (int(filled[0]), int(filled[-1])) if len(filled) else (0, pre.shape[2] - 1)
        slices = sorted(set(np.linspace(lo, hi, 6)[1:-1].astype(int).tolist()))
    fig, axes = plt.subplots(len(slices), 4, figsize=(10, 2.6 * len(slices)), squeeze=False)
    lim = window_range(diff, diff != 0, symmetric=True)[1]

    def window(image: np.ndarray) -> dict[str, Any]:  # the brain's 1-99.5th percentiles: vessels do not darken it
        lo, hi = window_range(image, image != 0, (1.0, 99.5))
        return {"cmap": "gray", "vmin": lo, "vmax": hi}

    for row, z in zip(axes, slices, strict=True):
        for ax, data, name, kw in (
            (row[0], pre, "pre-Gd T1w", window(pre)),
            (row[1], post, "post-Gd T1w", window(post)),
            (row[2], diff, "post - pre (NAWM units)", {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
            (row[3], post, f"enhancing ({int(mask[:, :, z].sum())} voxels)", window(post)),
        ):
            ax.imshow(np.rot90(data[:, :, z]), **kw)
            ax.set_title(f"{name}, z={z}", fontsize=8)
            ax.axis("off")
        if mask[:, :, z].any():
            row[3].contour(np.rot90(mask[:, :, z].astype(float)), levels=[0.5], colors="red", linewidths=0.8)
        if rejected is not None and rejected[:, :, z].any():
            row[3].contour(np.rot90(rejected[:, :, z].astype(float)), levels=[0.5], colors="deepskyblue",
                           linewidths=0.8)  # fmt: skip
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def write_components_png(
    path: Path | str,
    result: EnhancingResult,
    pre: np.ndarray,
    post: np.ndarray,
    *,
    flair: np.ndarray | None = None,
    lesion: np.ndarray | None = None,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    title: str = "",
    half_width_mm: float = 14.0,
    per_page: int = 24,
) -> list[Path]:
    """One row per candidate component, zoomed on its centroid (axial, +-``half_width_mm``): pre-Gd T1w, post-Gd
    T1w, subtraction and FLAIR (with the lesion mask in yellow), the component outlined in green when kept and
    red when rejected, its verdict, rule and confidence above. More than ``per_page`` rows go to further pages
    ``<stem>-p2.png``...; returns the paths written (none without candidates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.components
    if not rows:
        return []
    path = Path(path)
    spacing = np.asarray(spacing_mm, float)
    half = np.maximum(np.round(half_width_mm / spacing[:2]).astype(int), 4)
    columns = [("pre-Gd T1w", pre), ("post-Gd T1w", post), ("post - pre", result.diff)]
    if flair is not None:
        columns.append(("FLAIR", flair))
    windows = {name: window_range(image, image != 0, (1.0, 99.5)) for name, image in columns}
    lim = window_range(result.diff, result.diff != 0, symmetric=True)[1]
    written = []
    for page, first in enumerate(range(0, len(rows), per_page), start=1):
        chunk = rows[first : first + per_page]
        fig, axes = plt.subplots(len(chunk), len(columns), figsize=(2.1 * len(columns), 2.35 * len(chunk)),
                                 squeeze=False)  # fmt: skip
        for ax_row, comp in zip(axes, chunk, strict=True):
            i, j, k = comp["i"], comp["j"], comp["k"]
            window = (slice(max(0, i - half[0]), i + half[0] + 1), slice(max(0, j - half[1]), j + half[1] + 1), k)
            outline = result.candidates[window] == comp["component"]
            colour = "lime" if comp["verdict"] == "kept" else "red"
            for ax, (name, image) in zip(ax_row, columns, strict=True):
                kw = ({"cmap": "RdBu_r", "vmin": -lim, "vmax": lim} if name == "post - pre" else
                      {"cmap": "gray", "vmin": float(windows[name][0]), "vmax": float(windows[name][1])})  # fmt: skip
                ax.imshow(np.rot90(image[window]), **kw)
                if outline.any():
                    ax.contour(np.rot90(outline.astype(float)), levels=[0.5], colors=colour, linewidths=0.9)
                if name == "FLAIR" and lesion is not None and lesion[window].any():
                    ax.contour(np.rot90(lesion[window].astype(float)), levels=[0.5], colors="yellow",
                               linewidths=0.6)  # fmt: skip
                ax.set_xticks([])
                ax.set_yticks([])
                if ax is ax_row[0]:
                    ax.set_ylabel(f"#{comp['component']} z={k}", fontsize=7)
            ax_row[0].set_title(
                f"#{comp['component']} {comp['verdict'].upper()} ({comp['confidence']:.2f}), "
                f"{comp['volume_mm3']:.0f} mm3: {comp['reason']}"[:130],
                fontsize=7, loc="left", color="darkgreen" if comp["verdict"] == "kept" else "darkred",
            )  # fmt: skip
        pages = -(-len(rows) // per_page)
        where = f"page {page}/{pages}; " if pages > 1 else ""
        fig.suptitle(f"{title} ({where}columns: {', '.join(n for n, _ in columns)})", fontsize=8)
        # fixed margins, not tight_layout: a long verdict line must run across the row, not shrink the panels
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.01, top=1 - 0.75 / fig.get_figheight(), hspace=0.28,
                            wspace=0.04)  # fmt: skip
        target = path if page == 1 else path.with_name(path.name.replace(".png", f"-p{page}.png"))
        written.append(save_figure(fig, target, dpi=90))
    return written
