"""Draw docs/img/architecture.png: the layers of tests/test_architecture.py, bottom to top, with every package
import between layers (arrows point from the importer down to what it imports). Run from the repository root:
``python benchmarks/architecture_picture.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]


def _architecture_test():  # the layer table and the import graph, from the test that enforces them
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "tests" / "test_architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    arch = _architecture_test()
    graph = arch._graph()
    units = [u for layer in arch.LAYERS for u in layer]
    edges = {(arch._unit(m), arch._unit(t)) for m, ts in graph.items() for t in ts}
    edges = {(a, b) for a, b in edges if a != b}
    fig, ax = plt.subplots(figsize=(12, 9))
    where = {}
    for row, layer in enumerate(arch.LAYERS):
        for col, unit in enumerate(layer):
            x = (col + 0.5) / len(layer)
            where[unit] = (x, row)
            ax.text(x, row, unit.removeprefix("gdfree.") if unit != "gdfree" else "gdfree (package)", ha="center",
                    va="center", fontsize=8, bbox={"boxstyle": "round", "fc": "#e8eef7", "ec": "#4a6fa5"})
    for a, b in sorted(edges):
        (x0, y0), (x1, y1) = where[a], where[b]
        ax.annotate("", xy=(x1, y1 + 0.2), xytext=(x0, y0 - 0.2),
                    arrowprops={"arrowstyle": "->", "color": "#999999", "lw": 0.5, "alpha": 0.6})
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.7, len(arch.LAYERS) - 0.3)
    ax.axis("off")
    ax.set_title(f"gdfree layers, bottom to top: {len(units)} units, {len(edges)} imports between them, none upward")
    out = ROOT / "docs" / "img" / "architecture.png"
    fig.savefig(out, dpi=90, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()
