"""The prepare record: written and read through PrepareRecord; files from before it load; bad fields named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdfree.preprocess.record import PREPARE_SCHEMA_VERSION, PrepareRecord

OLD = {  # a _prepare.json as gdfree wrote it before the record (no schema_version)
    "status": "done", "case": "sub-01", "config_digest": "abc", "config": {"reference": "FLAIR"},
    "gdfree_version": "0.1.0", "sources": {"T1w": "/d/sub-01_T1w.nii.gz"}, "sources_sha256": {"T1w": "0" * 64},
    "reference": "FLAIR", "native_grid": {"T1w": {"shape": [4, 4, 4], "affine": [[1, 0, 0, 0]] * 4}},
    "output_grid": {"shape": [4, 4, 4], "affine": [[1, 0, 0, 0]] * 4}, "outputs": {"T1w": "sub-01/anat/x.nii.gz"},
    "normalisation": {}, "timings_s": {"read": 0.1}, "brain_mask_source": "provided",
    "brain_mask_dice_atlas_vs_provided": 0.9, "enhancing": {"n_components": 1},
}  # fmt: skip


def test_a_record_from_before_loads_and_writes_back_what_it_read(tmp_path: Path):
    (tmp_path / "old.json").write_text(json.dumps(OLD))
    record = PrepareRecord.read(tmp_path / "old.json")
    assert record.schema_version == 0 and record.brain_mask["brain_mask_source"] == "provided"
    again = record.to_json()
    assert again.pop("schema_version") == PREPARE_SCHEMA_VERSION and again == OLD
    assert record.updated(outputs={**record.outputs, "qc": "q.png"}).outputs["qc"] == "q.png"


@pytest.mark.parametrize(
    ("change", "message"),
    [({"outputs": ["x"]}, "outputs: expected a JSON object"), ({"output_grid": {"shape": [1]}}, "output_grid"),
     ({"schema_version": 7}, "schema_version"), ({"case": None, "reference": None} | {"outputs": {"a": 3}},
     "outputs: expected role -> relative path")],
)  # fmt: skip
def test_a_bad_field_is_named(tmp_path: Path, change: dict, message: str):
    (tmp_path / "bad.json").write_text(json.dumps({**OLD, **change}))
    with pytest.raises(ValueError, match=message):
        PrepareRecord.read(tmp_path / "bad.json")
    missing = {k: v for k, v in OLD.items() if k != "outputs"}
    with pytest.raises(ValueError, match="lacks outputs"):
        PrepareRecord.from_json(missing, "x.json")
