"""Build the phantom's library of real lesion shapes from the shared open_ms_data consensus masks.

Every 26-connected component of the 20 GOLD_STANDARD masks (MNI space, 1 mm; Lesjak et al. 2017, CC-BY)
with a volume between 10 and 3000 mm3 is cropped to its bounding box, flipped so that its array axes
run along +x, +y, +z (RAS), and stored bit-packed in
``src/gdfree/phantom/lesion_shapes.npz`` with its MNI centroid and source patient. Re-running this
script on the same data gives the same file.

    python benchmarks/build_lesion_library.py [--data ../shared/data/open_ms_data]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from scipy import ndimage

from gdfree.io.adapters import discover_open_ms_data
from gdfree.io.images import atomic_path, read_volume

OUT = Path(__file__).parents[1] / "src/gdfree/phantom/lesion_shapes.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).parents[2] / "shared/data/open_ms_data"))
    parser.add_argument("--min-mm3", type=float, default=10.0)
    parser.add_argument("--max-mm3", type=float, default=3000.0)
    args = parser.parse_args()
    bits, shapes, offsets, centroids, sources = [], [], [0], [], []
    for files in discover_open_ms_data(Path(args.data) / "cross_sectional"):
        vol = read_volume(files.masks["lesion"])
        assert np.allclose(vol.spacing_mm, 1.0), vol.path
        labels, _n = ndimage.label(vol.data > 0, structure=np.ones((3, 3, 3)))
        for j, sl in enumerate(ndimage.find_objects(labels), start=1):
            comp = labels[sl] == j
            if not args.min_mm3 <= comp.sum() <= args.max_mm3:
                continue
            centre_vox = np.array([s.start for s in sl]) + ndimage.center_of_mass(comp)
            for axis in np.flatnonzero(np.diag(vol.affine)[:3] < 0):  # crop axes along +x, +y, +z
                comp = np.flip(comp, axis=axis)
            packed = np.packbits(comp.ravel())
            bits.append(packed)
            offsets.append(offsets[-1] + packed.size)
            shapes.append(comp.shape)
            centroids.append((vol.affine[:3, :3] @ centre_vox + vol.affine[:3, 3]).round(3))
            sources.append(files.subject)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        bits=np.concatenate(bits),
        offsets=np.asarray(offsets, dtype=np.int64),
        shapes=np.asarray(shapes, dtype=np.int32),
        centroid_mm=np.asarray(centroids, dtype=np.float64),
        source=np.asarray(sources),
    )
    with atomic_path(OUT) as tmp:
        tmp.write_bytes(buf.getvalue())
    print(f"{len(shapes)} lesion shapes -> {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
