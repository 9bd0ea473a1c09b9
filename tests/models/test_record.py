"""model.json as a typed record: written and read through one class; old files load; bad fields are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdfree.models.record import MODEL_SCHEMA_VERSION, ModelRecord

PRETRAINED = Path(__file__).resolve().parents[2] / "src" / "gdfree" / "pretrained" / "network" / "model.json"
SCHEMA0 = Path(__file__).resolve().parents[1] / "data" / "model_json_schema0.json"
"""The shipped model.json as it was before the record (kept when issue 33 re-chose its patient score)."""


def test_a_model_json_from_before_the_record_loads_and_round_trips():
    data = json.loads(SCHEMA0.read_text())
    record = ModelRecord.read(SCHEMA0)
    assert record.schema_version == 0 and "schema_version" not in data
    assert record.heads == tuple(data["heads"]) and record.temperature == data["temperature"]
    again = record.to_json()
    assert again["schema_version"] == MODEL_SCHEMA_VERSION
    assert {k: v for k, v in again.items() if k != "schema_version"} == data  # nothing lost, nothing added


def test_updated_merges_provenance_and_checks_the_fields_again():
    record = ModelRecord.read(PRETRAINED)
    changed = record.updated(temperature={"enhancing": 2.0, "lesion": 1.0}, provenance={"note": "x"})
    assert changed.temperature["enhancing"] == 2.0 and changed.provenance["note"] == "x"
    assert changed.provenance["split"] == record.provenance["split"]
    with pytest.raises(ValueError, match="temperature: expected head -> number"):
        record.updated(temperature={"enhancing": "hot"})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("heads", "enhancing", "heads: expected a list of names"), ("threshold", None, "threshold: expected a number"),
     ("oracle", "no", "oracle: expected true or false"), ("schema_version", 99, "schema_version: expected 0 to"),
     ("architecture", {"class": 3}, "architecture must be"), ("spacing_mm", [1.0, 1.0, 0.0], "spacing_mm: expected"),
     ("spacing_mm", [2.0, 2.0, 50.0], r"three voxel sizes in \[0.1, 10.0\] mm"), ("spacing_mm", [1, 1], "spacing_mm")],
)  # fmt: skip
def test_a_field_of_the_wrong_type_is_named(tmp_path: Path, field: str, value: object, message: str):
    data = {**json.loads(PRETRAINED.read_text()), field: value}
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        ModelRecord.read(tmp_path / "model.json")
