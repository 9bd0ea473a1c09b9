"""Property-based faults (issue 16): corrupted NIfTI headers and arrays, corrupted model folders, option values.

Every case must end in a correct result or a clear error naming the file or option; never another exception,
a hang (hypothesis deadline) or a changed input. The list of faults and outcomes is in docs/faults.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gdfree.errors import ImageReadError
from gdfree.io.images import SPACING_RANGE_MM, read_mask, read_volume

SETTINGS = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])

# NIfTI-1 header offsets (bytes): dim[8] int16 at 40, datatype int16 at 70, bitpix at 72, pixdim[8] float32 at
# 76, vox_offset float32 at 108, scl_slope/scl_inter float32 at 112/116, qform/sform codes int16 at 252/254.
_FIELDS = {
    "dim": (40, "h", 8), "datatype": (70, "h", 1), "bitpix": (72, "h", 1), "pixdim": (76, "f", 8),
    "vox_offset": (108, "f", 1), "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1),
    "qform_code": (252, "h", 1), "sform_code": (254, "h", 1),
}  # fmt: skip

_floats = st.one_of(
    st.sampled_from([0.0, -1.0, 1e-9, 1e9, math.nan, math.inf, -math.inf, 1.0, 2.0, 0.5]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
_ints = st.one_of(st.sampled_from([-1, 0, 1, 3, 4, 7, 8, 32767, -32768]), st.integers(-32768, 32767))


@st.composite
def _nifti_faults(draw: st.DrawFn) -> dict:
    dtype = draw(st.sampled_from(["uint8", "int16", "int32", "float32", "float64", "complex64"]))
    shape = draw(st.sampled_from([(3, 4, 5), (1, 1, 1), (3, 4, 5, 1), (3, 4, 5, 2), (3, 4), (2, 2, 2, 1, 1)]))
    poison = draw(st.sampled_from([None, math.nan, math.inf, -math.inf])) if "float" in dtype else None
    field = draw(st.sampled_from([None, *_FIELDS]))
    index = draw(st.integers(0, _FIELDS[field][2] - 1)) if field else 0
    value = (draw(_floats) if _FIELDS[field][1] == "f" else draw(_ints)) if field else None
    keep = draw(st.sampled_from([None, 0, 10, 200, 348, 352, 360]))  # truncate the file to this many bytes
    return {"dtype": dtype, "shape": shape, "poison": poison, "field": field, "index": index, "value": value,
            "keep": keep}  # fmt: skip


def _write_faulty(folder: Path, fault: dict) -> Path:
    rng = np.random.default_rng(0)
    data = (rng.random(fault["shape"]) * 100).astype(fault["dtype"])
    if fault["poison"] is not None:
        data.flat[data.size // 2] = fault["poison"]
    path = folder / "sub-01_FLAIR.nii"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.5, 2.0, 1.0])), path)
    raw = bytearray(path.read_bytes())
    if fault["field"]:
        offset, code, _ = _FIELDS[fault["field"]]
        size = struct.calcsize(code)
        struct.pack_into("<" + code, raw, offset + fault["index"] * size, fault["value"])
    if fault["keep"] is not None:
        raw = raw[: fault["keep"]]
    path.write_bytes(bytes(raw))
    return path


@SETTINGS
@given(fault=_nifti_faults())
def test_a_corrupted_nifti_is_read_correctly_or_refused_by_name(fault: dict):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write_faulty(Path(tmp), fault)
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        for reader in (read_volume, read_mask):
            try:
                volume = reader(path)
            except ImageReadError as exc:
                assert str(path) in str(exc)
            else:  # a correct result: one finite 3-D volume with a sane voxel size
                assert volume.data.ndim == 3 and min(volume.data.shape) >= 1
                assert volume.data.dtype == bool or np.isfinite(volume.data).all()
                low, high = SPACING_RANGE_MM
                assert all(low <= s <= high for s in volume.spacing_mm)
                if reader is read_mask:
                    assert volume.data.dtype == bool
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the input is untouched


_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-10, 10, allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
_KEYS = ["architecture", "heads", "modalities", "normalisation", "threshold", "thresholds", "temperature",
         "min_lesion_mm3", "rule", "training_fingerprints", "oracle", "config", "validation",
         "weights_sha256"]  # fmt: skip


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import untrained_run

    return untrained_run(tmp_path_factory.mktemp("model") / "run")


@SETTINGS
@given(key=st.sampled_from(_KEYS), value=_json_values, delete=st.booleans(), cut=st.sampled_from([None, 0, 8, 100]))
def test_a_corrupted_model_folder_loads_correctly_or_is_refused_by_name(
    model_folder: Path, key: str, value: object, delete: bool, cut: int | None
):
    import shutil

    from gdfree.infer.model import TrainedModel

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        shutil.copytree(model_folder, folder)
        meta = json.loads((folder / "model.json").read_text())
        if delete:
            meta.pop(key, None)
        else:
            meta[key] = value
        (folder / "model.json").write_text(json.dumps(meta))
        if cut is not None:
            weights = folder / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:cut])
        try:
            model = TrainedModel.load(folder)
        except (ValueError, FileNotFoundError) as exc:
            assert str(folder) in str(exc)
        else:
            assert cut is None
            prob = model.probabilities(np.zeros((len(model.modalities), 8, 8, 8), np.float32))
            assert prob.shape[0] == len(model.heads) and np.isfinite(prob).all()
            assert all(0 < t < 1 for t in model.thresholds.values())


runner = CliRunner()


@pytest.fixture(scope="module")
def predictions(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gdfree.predict import predict_dataset
    from tests.conftest import untrained_run

    root = tmp_path_factory.mktemp("options")
    predict_dataset(untrained_run(root / "run"), tiny_cohort, root / "pred")
    return root / "pred"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rule=st.sampled_from(["msseg", "iou", "any", "anima", ""]),
    connectivity=st.sampled_from([None, 6, 18, 26, 0, 7, -6]),
    min_volume=st.sampled_from([None, 0.0, 3.0, -1.0, math.inf, math.nan]),
    threshold=st.sampled_from([0.5, 0.0, 1.0, 1.5, -0.1, math.nan]),
    score=st.sampled_from(["max_prob", "count", "volume", "max_lesion_prob", "mean"]),
    n_boot=st.sampled_from([10, 0, -5]),
    target=st.sampled_from(["enhancing", "lesion", "tumour"]),
)
def test_evaluate_option_values_give_a_result_or_a_clear_error(
    predictions: Path, tiny_cohort: Path, tmp_path: Path, rule, connectivity, min_volume, threshold, score, n_boot,
    target,
):  # fmt: skip
    args = ["evaluate", "--pred", str(predictions), "--ref", str(tiny_cohort), "--out", str(tmp_path / "e"),
            "--rule", rule, "--threshold", str(threshold), "--patient-score", score, "--n-boot", str(n_boot),
            "--target", target]  # fmt: skip
    if connectivity is not None:
        args += ["--connectivity", str(connectivity)]
    if min_volume is not None:
        args += ["--min-volume", str(min_volume)]
    from gdfree.cli import app

    result = runner.invoke(app, args)
    assert isinstance(result.exception, SystemExit | type(None)), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert "error:" in result.output
