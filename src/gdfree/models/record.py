"""``model.json`` as a typed record: training writes it through :class:`ModelRecord`, and every reader
(:func:`gdfree.models.checkpoint.load_model`, :class:`gdfree.infer.model.TrainedModel`) reads it through the same
class, so a field is validated where it is written and where it is read.

The fields a model is applied with are typed attributes; what only records how it was made (the resolved
config, the split, the validation scores, the step, DDP facts, versions) stays in :attr:`ModelRecord.provenance`,
written beside them. ``schema_version`` 1 is this layout; a file without it (written before the record existed)
holds the same fields and loads as version 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gdfree.io.tables import read_json, write_json
from gdfree.metrics.patient import PROBABILITY_SCORES

__all__ = ["MODEL_SCHEMA_VERSION", "ModelRecord"]

MODEL_SCHEMA_VERSION = 1
_REQUIRED = ("architecture", "heads", "modalities", "normalisation", "threshold")
MIN_SPACING_MM, MAX_SPACING_MM = 0.1, 10.0
"""A recorded training voxel size outside this range (per axis) is refused as absurd."""


def _fail(where: str, key: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{where}: {key}: expected {expected}, got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ModelRecord:
    """The content of ``model.json``.

    Attributes:
        architecture: {"class": network class name, "kwargs": its keyword arguments}; the network is rebuilt
            from them. heads, modalities: output heads and input channels, in order. normalisation: the input
            normalisation's name. oracle: post-Gd inputs allowed (an upper-bound reference only).
        threshold, thresholds: the default and per-head decision thresholds chosen on validation (uncalibrated
            scale). min_lesion_mm3: enhancing components of this volume or less are dropped. rule: the detection
            rule's fields. temperature, temperature_notes: per-head temperatures fitted on validation, and why a
            head has none. patient_threshold: the patient-level threshold, or None; patient_score: the patient
            score it applies to (:data:`gdfree.metrics.patient.PROBABILITY_SCORES`; ``max_prob`` for a record
            from before it was recorded); lesion_calibration: (slope, intercept) of ``top_lesion_calibrated`` on
            the uncalibrated scale (:func:`gdfree.metrics.patient.fit_lesion_calibration`), or None.
            translation: calibration of an enhancing head read from a synthetic post-Gd T1w, or None.
        training_fingerprints: SHA-256 of every input file trained or validated on (predict refuses them).
        weights_sha256: SHA-256 of the weights file (set when the weights are saved).
        spacing_mm: the voxel size (mm, per axis) of the data it was trained on: predict runs the network at it
            (:mod:`gdfree.infer.grid`); None for a model from before it was recorded.
        provenance: everything else, written as it is (config, split, step, validation, distributed...).
        schema_version: the layout version (0: a file from before the record).
    """

    architecture: dict[str, Any]
    heads: tuple[str, ...]
    modalities: tuple[str, ...]
    normalisation: str
    threshold: float
    oracle: bool = False
    thresholds: dict[str, float] = field(default_factory=dict)
    min_lesion_mm3: float = 0.0
    rule: dict[str, Any] = field(default_factory=lambda: {"name": "msseg"})
    temperature: dict[str, float] = field(default_factory=dict)
    temperature_notes: dict[str, str] = field(default_factory=dict)
    patient_threshold: float | None = None
    patient_score: str = "max_prob"
    lesion_calibration: tuple[float, float] | None = None
    translation: dict[str, Any] | None = None
    training_fingerprints: tuple[str, ...] = ()
    weights_sha256: str | None = None
    spacing_mm: tuple[float, float, float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    schema_version: int = MODEL_SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: Path | str = "model.json") -> ModelRecord:
        """The record of a parsed ``model.json``, every field checked for its type.

        Raises:
            ValueError: a required field is missing or a field is not of its type (naming ``where`` and it).
        """
        where = str(where)
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{where}: lacks {', '.join(missing)}; not a gdfree model description")
        arch = data["architecture"]
        if not (isinstance(arch, dict) and isinstance(arch.get("class"), str) and isinstance(arch.get("kwargs"), dict)):
            raise ValueError(f"{where}: architecture must be {{'class': name, 'kwargs': {{...}}}}, got {arch!r}")
        for key in ("heads", "modalities"):
            if not isinstance(data[key], list) or not all(isinstance(v, str) for v in data[key]):
                raise _fail(where, key, "a list of names", data[key])
        if not isinstance(data["normalisation"], str):
            raise _fail(where, "normalisation", "a name", data["normalisation"])
        if not _number(data["threshold"]):
            raise _fail(where, "threshold", "a number", data["threshold"])
        if not isinstance(data.get("oracle", False), bool):
            raise _fail(where, "oracle", "true or false", data.get("oracle"))
        for key in ("thresholds", "temperature"):
            value = data.get(key, {})
            if not isinstance(value, dict) or not all(_number(v) for v in value.values()):
                raise _fail(where, key, "head -> number", value)
        for key in ("rule", "temperature_notes"):
            if not isinstance(data.get(key, {}), dict):
                raise _fail(where, key, "a JSON object", data.get(key))
        if not _number(data.get("min_lesion_mm3", 0.0)):
            raise _fail(where, "min_lesion_mm3", "a volume in mm3", data.get("min_lesion_mm3"))
        if data.get("patient_threshold") is not None and not _number(data["patient_threshold"]):
            raise _fail(where, "patient_threshold", "a number or null", data["patient_threshold"])
        if data.get("patient_score", "max_prob") not in PROBABILITY_SCORES:
            raise _fail(where, "patient_score", f"one of {', '.join(PROBABILITY_SCORES)}", data.get("patient_score"))
        lesion = data.get("lesion_calibration")
        if lesion is not None and not (isinstance(lesion, list) and len(lesion) == 2 and all(map(_number, lesion))):
            raise _fail(where, "lesion_calibration", "[slope, intercept] or null", lesion)
        if data.get("patient_score") == "top_lesion_calibrated" and lesion is None:
            raise _fail(where, "lesion_calibration", "[slope, intercept] for top_lesion_calibrated", lesion)
        if data.get("translation") is not None and not isinstance(data["translation"], dict):
            raise _fail(where, "translation", "a JSON object or null", data["translation"])
        prints = data.get("training_fingerprints", [])
        if not isinstance(prints, list) or not all(isinstance(p, str) for p in prints):
            raise ValueError(f"{where}: training_fingerprints: expected a list of SHA-256 strings")
        if data.get("weights_sha256") is not None and not isinstance(data["weights_sha256"], str):
            raise _fail(where, "weights_sha256", "a SHA-256 string", data["weights_sha256"])
        spacing = data.get("spacing_mm")
        if spacing is not None and not (isinstance(spacing, list) and len(spacing) == 3
                                        and all(_number(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing)):
            raise _fail(where, "spacing_mm", f"three voxel sizes in [{MIN_SPACING_MM}, {MAX_SPACING_MM}] mm", spacing)
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MODEL_SCHEMA_VERSION:
            raise _fail(where, "schema_version", f"0 to {MODEL_SCHEMA_VERSION} (a newer gdfree wrote it?)", version)
        known = {f for f in cls.__dataclass_fields__ if f != "provenance"}
        return cls(
            architecture=arch, heads=tuple(data["heads"]), modalities=tuple(data["modalities"]),
            normalisation=data["normalisation"], threshold=float(data["threshold"]),
            oracle=bool(data.get("oracle", False)), thresholds=dict(data.get("thresholds", {})),
            min_lesion_mm3=float(data.get("min_lesion_mm3", 0.0)), rule=dict(data.get("rule", {"name": "msseg"})),
            temperature=dict(data.get("temperature", {})), temperature_notes=dict(data.get("temperature_notes", {})),
            patient_threshold=data.get("patient_threshold"), patient_score=data.get("patient_score", "max_prob"),
            lesion_calibration=(float(lesion[0]), float(lesion[1])) if lesion is not None else None,
            translation=data.get("translation"),
            training_fingerprints=tuple(prints), weights_sha256=data.get("weights_sha256"),
            spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])) if spacing is not None else None,
            provenance={k: v for k, v in data.items() if k not in known}, schema_version=version,
        )  # fmt: skip

    @classmethod
    def read(cls, path: Path) -> ModelRecord:
        """Read and check ``path`` (a ``model.json``). Raises ValueError (naming the file) for bad content."""
        return cls.from_json(read_json(path), path)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``model.json`` (``None`` fields left out, as before the record)."""
        out: dict[str, Any] = {"schema_version": MODEL_SCHEMA_VERSION, "architecture": self.architecture,
                               "heads": list(self.heads), "modalities": list(self.modalities), "oracle": self.oracle,
                               "normalisation": self.normalisation, "rule": self.rule, **self.provenance,
                               "training_fingerprints": list(self.training_fingerprints),
                               "threshold": self.threshold, "thresholds": self.thresholds,
                               "min_lesion_mm3": self.min_lesion_mm3}  # fmt: skip
        optional = {"patient_threshold": self.patient_threshold, "translation": self.translation,
                    "patient_score": self.patient_score if self.patient_score != "max_prob" else None,
                    "lesion_calibration": list(self.lesion_calibration) if self.lesion_calibration else None,
                    "weights_sha256": self.weights_sha256,
                    "spacing_mm": list(self.spacing_mm) if self.spacing_mm is not None else None}  # fmt: skip
        out.update({k: v for k, v in optional.items() if v is not None})
        if self.temperature or self.temperature_notes:
            out.update(temperature=self.temperature, temperature_notes=self.temperature_notes)
        return out

    def bound(self) -> dict[str, Any]:
        """The fields also written into the weights file's header (checked against it on load)."""
        return {"architecture": self.architecture, "heads": list(self.heads), "modalities": list(self.modalities)}

    def updated(self, **changes: Any) -> ModelRecord:
        """A copy with ``changes`` (fields, or ``provenance`` keys merged into it), checked again."""
        provenance = {**self.provenance, **changes.pop("provenance", {})}
        return ModelRecord.from_json(replace(self, provenance=provenance, **changes).to_json(), "model record")

    def write(self, path: Path) -> Path:
        """Write ``path`` (atomically)."""
        return write_json(path, self.to_json())
