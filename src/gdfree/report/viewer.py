"""The report's interactive viewer: NiiVue (npm @niivue/niivue, bundled by ``make``) and the volumes it shows.

A report must open from a folder with no server (``file://``), where a browser refuses to fetch NIfTI files.
So every volume travels inside a small script (``viewer.js``) that sets ``window.gdfreeViewer``: each image
cropped to the brain's box, stored as an 8-bit NIfTI (intensities windowed to their 0.5-99.5th percentile
in the brain, probabilities and uncertainties as value x 255 with ``scl_slope`` = 1/255, so the viewer
reads them in their own units) and base64-encoded. The JSON is written with ``<``, ``>`` and ``&`` escaped,
so no file name or id in it can end the script.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.arrays import bounding_box, window_range
from gdfree.errors import GdfreeError

__all__ = ["NIIVUE", "ViewerVolume", "niivue_asset", "script_json", "volume_entry", "write_viewer_data"]

NIIVUE = Path(__file__).parent / "assets" / "niivue.umd.js"
"""NiiVue's browser build, copied from viewer/node_modules by ``make`` (not in the repository)."""

NIIVUE_VERSION = "0.69.0"
"""The version pinned in viewer/package.json (BSD-2-Clause, niivue.com)."""


def niivue_asset() -> Path:
    """The bundled NiiVue build.

    Raises:
        GdfreeError: it is missing (the package was installed without ``make``).
    """
    if not NIIVUE.is_file():
        raise GdfreeError(f"{NIIVUE}: the NiiVue viewer is not installed; run `make demo` or `make test` in the "
                          "gdfree checkout (it installs @niivue/niivue from npm), or pass --no-viewer")  # fmt: skip
    return NIIVUE


@dataclass(frozen=True)
class ViewerVolume:
    """One layer of the viewer: ``kind`` is ``image`` (windowed grey), ``map`` (values in [0, 1], e.g. a
    probability) or ``label`` (integer labels, shown with ``colormap``, or in ``rgb``: one colour, the one
    :data:`gdfree.io.colours.MASK_COLOURS` gives the mosaics and colour tables)."""

    name: str
    data: np.ndarray
    kind: str
    colormap: str = "gray"
    opacity: float = 1.0
    visible: bool = True
    rgb: tuple[int, int, int] | None = None


def _image_bytes(data: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """``data`` windowed to its 0.5-99.5th percentile inside ``inside``, as 0-255."""
    lo, hi = window_range(data, inside)
    scaled = (data.astype(np.float32) - lo) / (hi - lo)
    return np.round(np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def volume_entry(volume: ViewerVolume, affine: np.ndarray, box: tuple[slice, ...], brain: np.ndarray) -> dict[str, Any]:
    """The JSON entry of one layer: its 8-bit NIfTI (cropped to ``box``, gzip, base64) and display settings."""
    import nibabel as nib

    data = np.asarray(volume.data)[box]
    slope = 1.0
    if volume.kind == "image":
        arr, cal = _image_bytes(data, np.asarray(brain)[box] > 0), (0.0, 255.0)
    elif volume.kind == "map":
        arr, slope, cal = np.round(np.clip(np.nan_to_num(data), 0, 1) * 255).astype(np.uint8), 1 / 255, (0.05, 1.0)
    elif volume.kind == "label":
        arr = np.clip(np.nan_to_num(data), 0, 255).astype(np.uint8)
        cal = (0.5, float(max(int(arr.max(initial=0)), 1)))
    else:
        raise ValueError(f"kind {volume.kind!r}: expected image, map or label")
    shift = np.eye(4)
    shift[:3, 3] = [s.start for s in box]
    image = nib.Nifti1Image(arr, np.asarray(affine, float) @ shift)
    image.header.set_slope_inter(slope, 0.0)
    image.header.set_xyzt_units("mm")
    raw = gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)
    colormap = volume.colormap if volume.rgb is None else f"gdfree{''.join(f'{c:02x}' for c in volume.rgb)}"
    return {"name": volume.name, "base64": base64.b64encode(raw).decode("ascii"), "colormap": colormap,
            "opacity": volume.opacity if volume.visible else 0.0, "defaultOpacity": volume.opacity,
            "cal_min": cal[0], "cal_max": cal[1], "kind": volume.kind,
            **({"rgb": list(volume.rgb)} if volume.rgb is not None else {})}  # fmt: skip


def script_json(value: Any) -> str:
    """JSON safe inside a script: ``<``, ``>`` and ``&`` as \\u escapes (nothing can close the element)."""
    text = json.dumps(value, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_viewer_data(
    path: Path, volumes: list[ViewerVolume], affine: np.ndarray, brain: np.ndarray, lesions: list[dict[str, Any]]
) -> Path:
    """Write ``viewer.js`` for one case: its layers (cropped to the brain's box) and the lesion centroids (mm)
    the lesion table jumps to."""
    from gdfree.io.images import write_text

    inside = np.asarray(brain) > 0
    box = bounding_box(inside, margin=4) or tuple(slice(0, n) for n in inside.shape)
    entries = [volume_entry(v, affine, box, brain) for v in volumes]
    return write_text(path, "window.gdfreeViewer = " + script_json({"volumes": entries, "lesions": lesions}) + ";\n")
