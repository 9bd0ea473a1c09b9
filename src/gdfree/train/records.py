"""The model record a training run writes (``model.json``, :class:`gdfree.models.record.ModelRecord`): what is
fixed for the run (:func:`record_base`) and what validation chose at each checkpoint (:func:`checkpoint_record`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

import gdfree
from gdfree.config import config_to_dict
from gdfree.data.cases import ArrayCase
from gdfree.metrics.lesions import DetectionRule
from gdfree.models.record import ModelRecord
from gdfree.train.config import HEADS, TrainConfig

__all__ = ["checkpoint_record", "record_base", "training_spacing"]


def training_spacing(cases: Sequence[ArrayCase]) -> list[float]:
    """The voxel size a model is trained at, recorded in its model.json: the median of its training cases' per
    axis, in mm (rounded to 0.1 um)."""
    return [round(float(v), 4) for v in np.median([c.spacing_mm for c in cases], axis=0)]


def record_base(
    cfg: TrainConfig, kwargs: dict[str, Any], parts: dict[str, Any], fingerprints: list[str],
    train_cases: Sequence[ArrayCase], init: dict[str, Any] | None, world_size: int, device: str,
) -> dict[str, Any]:  # fmt: skip
    """The fields of every checkpoint's record: architecture, heads, inputs, the lesion rule, the resolved config,
    the split, what it was trained on (fingerprints and their hash, the voxel size), versions, DDP facts
    (``world_size`` 0: one process)."""
    rule = DetectionRule.preset("msseg")
    return {
        "architecture": {"class": "MultitaskUNet", "kwargs": kwargs},
        "heads": list(cfg.heads), "modalities": list(cfg.modalities), "oracle": cfg.oracle,
        "normalisation": cfg.normalisation, "rule": {"name": rule.name, "connectivity": rule.connectivity,
                                                 "min_volume_mm3": rule.min_volume_mm3},
        "config": config_to_dict(cfg), "split": parts, "training_fingerprints": fingerprints,
        "training_data_sha256": hashlib.sha256("".join(fingerprints).encode()).hexdigest(),
        "gdfree_version": gdfree.__version__, **({"init": init} if init else {}),
        "spacing_mm": training_spacing(train_cases),
        **({"distributed": {"world_size": world_size, "backend": "nccl" if device.startswith("cuda") else "gloo"}}
           if world_size else {}),
    }  # fmt: skip


def checkpoint_record(base: dict[str, Any], val: dict[str, Any], step: int, t1: int | None) -> ModelRecord:
    """The model record of a checkpoint: the run's fields and what validation chose at ``step``."""
    return ModelRecord.from_json({
        **base, "threshold": val.get("threshold", 0.5),
        "thresholds": {h: val[f"{h}_threshold"] for h in HEADS if f"{h}_threshold" in val},
        **({"translation": {"calibration": val["translation_calibration"], "t1_channel": t1}}
           if "translation_calibration" in val else {}),
        "min_lesion_mm3": val.get("min_lesion_mm3", 0.0), "step": step, "validation": val,
        **({"patient_threshold": val["patient_threshold"], "patient_score": val["patient_score"]}
           if val.get("patient_threshold") else {}),
        **({"lesion_calibration": [val["lesion_calibration_slope"], val["lesion_calibration_intercept"]]}
           if "lesion_calibration_slope" in val else {}),
    }, "model record")  # fmt: skip
