"""``gdfree to-native``: predictions on the prepared grid mapped back onto the acquired grid, round trip on the
shared longitudinal patient (native scanner space, anisotropic voxels, skull on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gdfree.cli import app
from gdfree.io.adapters import discover
from gdfree.io.bids import derivative_path
from gdfree.io.images import from_sitk, read_volume, to_sitk, write_volume
from gdfree.preprocess.prepare import PIPELINE, PrepareConfig, prepare_dataset
from gdfree.preprocess.record import PrepareRecord
from gdfree.preprocess.registration import RegistrationConfig, read_transform, resample
from gdfree.types import Volume

LONGITUDINAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "open_ms_data" / "longitudinal"


def _world(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """(3, X, Y, Z) world coordinates (mm) of every voxel centre."""
    idx = np.indices(shape).reshape(3, -1).astype(np.float64)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.skipif(not LONGITUDINAL.is_dir(), reason="needs ../shared/data/open_ms_data")
def test_native_round_trip_on_the_shared_longitudinal_patient(tmp_path: Path):
    case = next(c for c in discover(LONGITUDINAL) if c.session == "study1")
    fast = RegistrationConfig(stages=("rigid",), shrink=(4,), smooth_mm=(2.0,), iterations=60)
    prepared = tmp_path / "prepared"
    result = prepare_dataset([case], prepared, PrepareConfig(n4=False, registration=fast, spacing_mm=2.0,
                                                             check_brain_mask=False))  # fmt: skip
    assert result.done == [case.case_id], result
    record_path = derivative_path(prepared / "derivatives" / PIPELINE, case.subject, case.session, "prepare", ".json")
    record = PrepareRecord.read(record_path)
    grid = Volume(np.zeros(record.output_grid["shape"], np.float32), np.asarray(record.output_grid["affine"]))
    # the T1w's own world coordinates, carried forward onto the prepared grid as prepare carries images
    t1 = read_volume(case.images["T1w"])
    coords = _world(t1.shape, t1.affine)
    coords = np.concatenate([coords, np.ones((1, *t1.shape))])  # ones: where nothing outside a view mixed in
    transform = read_transform(prepared / record.outputs["xfm_T1w"])
    forward = [from_sitk(resample(to_sitk(Volume(c.astype(np.float32), t1.affine)), to_sitk(grid), transform,
                                  interpolation="linear")).data for c in coords]  # fmt: skip
    predictions = tmp_path / "predictions"
    names = ("x", "y", "z", "one")
    for axis, data in zip(names, forward, strict=True):
        write_volume(grid.with_data(data.astype(np.float32)),
                     derivative_path(predictions, case.subject, case.session, "probseg", desc=axis))  # fmt: skip
    inside = forward[3] > 0.5
    write_volume(grid.with_data(inside.astype(np.uint8)),
                 derivative_path(predictions, case.subject, case.session, "mask", desc="enhancing"))  # fmt: skip
    native = tmp_path / "native"
    run = CliRunner().invoke(app, ["to-native", str(predictions), "--prepared", str(prepared), "--out", str(native),
                                   "--role", "T1w"])  # fmt: skip
    assert run.exit_code == 0, run.output
    back = [read_volume(derivative_path(native, case.subject, case.session, "probseg", space="orig", desc=a))
            for a in names]  # fmt: skip
    assert all(b.same_grid(t1) for b in back)
    mask = read_volume(derivative_path(native, case.subject, case.session, "mask", space="orig", desc="enhancing"))
    assert mask.same_grid(t1) and mask.data.dtype == np.uint8 and set(np.unique(mask.data)) <= {0, 1}
    # voxels inside both fields of view: each comes back to where it started, within half its voxel
    from scipy import ndimage

    # away from either field of view's edge (interpolation within half a voxel of an image's border clamps to the
    # border voxel: 6 mm, three prepared voxels, from the T1w's border and 4 mm from the prepared grid's)
    valid = ndimage.distance_transform_edt(back[3].data >= 1 - 1e-6, sampling=t1.spacing_mm) > 4.0
    margin = [int(np.ceil(6.0 / sp)) for sp in t1.spacing_mm]
    core = np.zeros(t1.shape, bool)
    core[tuple(slice(m, n - m) for m, n in zip(margin, t1.shape, strict=True))] = True
    valid &= core
    assert valid.mean() > 0.3
    error = np.stack([b.data[valid] for b in back[:3]]) - coords[:3, valid]
    in_voxels = np.abs(np.linalg.inv(t1.affine[:3, :3]) @ error)  # per-axis error in T1w voxel units
    assert in_voxels.max() <= 0.01, in_voxels.max(axis=1)  # the criterion is half a voxel; measured 2e-5
    rows = (native / "native.tsv").read_text().splitlines()
    assert len(rows) == 6 and all("\tT1w\t" in r for r in rows[1:])
    # a prediction folder with a case prepare never saw: named, the rest goes on
    bad = CliRunner().invoke(app, ["to-native", str(predictions), "--prepared", str(tmp_path / "none"),
                                   "--out", str(tmp_path / "n2")])  # fmt: skip
    assert bad.exit_code == 1 and "no prepare record" in bad.output
    # a damaged transform file: that file's row says which and why, the others go on (was: a TSV error)
    xfm = prepared / record.outputs["xfm_T1w"]
    xfm.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: nonsense\n")
    damaged = CliRunner().invoke(app, ["to-native", str(predictions), "--prepared", str(prepared), "--out",
                                       str(tmp_path / "n3"), "--role", "T1w"])  # fmt: skip
    assert damaged.exit_code == 1 and "not an ITK transform file" in damaged.output, damaged.output
