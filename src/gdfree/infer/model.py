"""A trained model as every consumer sees it: the network, verified on load, with its validated description.

:class:`TrainedModel` is the one reader of ``model.json``: ``predict``, ``explain``, the demo and ensembles
all take their heads, inputs, temperatures, thresholds and post-processing from it, so they cannot drift
apart. Loading checks the weights' SHA-256 and header against ``model.json`` (see
:mod:`gdfree.models.checkpoint`) and validates every field it uses; a bad value is a ``ValueError`` naming
the file and the field.

Per head, the decision threshold is the one chosen on the validation patients for that head (older models
that recorded a single ``threshold`` use it for every head) and is applied on the calibrated scale: with
temperature T, probability p = sigmoid(z / T) and threshold sigmoid(logit(t) / T) select the same voxels
as the uncalibrated threshold t did.

A model with a ``t1gd`` (translation) output synthesises the post-Gd T1w; :attr:`TrainedModel.heads` lists its
probability heads, where ``enhancing`` is read from the synthetic image with the calibration fitted on
validation (``translation`` in ``model.json``) when the network has no enhancing head of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gdfree.arrays import bounding_box, label_components, logit, sigmoid
from gdfree.data.cases import NORMALISATIONS
from gdfree.data.translation import TRANSLATION_HEAD, enhancement_probability, enhancement_z
from gdfree.metrics.lesions import DetectionRule
from gdfree.models.forward import box_margin, fov_independent, predict_volume
from gdfree.models.record import ModelRecord
from gdfree.types import check_input_modalities

__all__ = ["TrainedModel"]

_HEADS = ("enhancing", "lesion", "new", TRANSLATION_HEAD)


def _patient_level(
    record: ModelRecord, temperature: float, where: Path | str
) -> tuple[float | None, tuple[float, float] | None]:  # fmt: skip
    """The patient threshold and lesion calibration of ``record`` mapped from the uncalibrated probabilities
    they were chosen on onto those calibrated with the enhancing head's ``temperature`` (a logit divided by it)."""
    patient = record.patient_threshold
    if patient is not None:
        raw = _fraction(patient, f"{where}: patient_threshold")
        patient = float(sigmoid(logit(raw) / temperature, dtype=np.float64))
    lesion = record.lesion_calibration
    return patient, (lesion[0] * temperature, lesion[1]) if lesion is not None else None


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{where}: expected a number in (0, 1), got {value!r}")
    return float(value)


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{where}: expected a finite number > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A trained network with everything needed to apply it as it was validated.

    Attributes:
        folder: the run folder it was loaded from.
        network: the module, in eval mode, on the device it was loaded to.
        heads: probability heads in order (:meth:`probabilities`); modalities: input channels in order
            (pre-contrast unless ``oracle``).
        network_heads: the network's output channels (``t1gd``: the synthetic post-Gd T1w, T1w z units).
        translation: ``calibration`` (a, b) and ``t1_channel`` of an enhancing head read from the synthetic
            image, or None.
        normalisation: name of the input normalisation (:data:`gdfree.data.cases.NORMALISATION`).
        temperature: head -> temperature fitted on validation (1 when none was fitted).
        thresholds: head -> decision threshold on the calibrated probability scale.
        min_lesion_mm3: enhancing components of this volume or less are dropped from the enhancing mask.
        patient_threshold: an exam is called active when its ``patient_score`` (of the calibrated enhancing
            probabilities) is >= this, chosen for patients on validation (highest Youden J); None for older
            models. patient_score: one of :data:`gdfree.metrics.patient.PROBABILITY_SCORES`; lesion_calibration:
            its lesion calibration (slope, intercept) mapped onto the calibrated probabilities, or None.
        rule: the detection rule lesions are formed with (its connectivity, minimum volume).
        weights_sha256: hash of the weights file, checked on load.
        training_fingerprints: SHA-256 of every input file the model trained or validated on.
        control: trained on randomised labels (the attribution sanity-check control), not for prediction.
        spacing_mm: the voxel size it was trained at; given an exam's voxel size, :meth:`predict` and
            :meth:`sample` run the network at this one (:mod:`gdfree.infer.grid`). None: a model from before it
            was recorded, run at the exam's voxel size.
        precision: ``fp32``, ``fp32-cl`` (:meth:`predict` in channels-last layout) or ``bf16`` (under bfloat16
            autocast); MC dropout, flips and ensembles stay ``fp32``. Set by the caller (``gdfree predict
            --precision``).
        meta: the whole ``model.json``, for provenance.
    """

    folder: Path
    network: nn.Module
    heads: tuple[str, ...]
    modalities: tuple[str, ...]
    normalisation: str
    oracle: bool
    temperature: Mapping[str, float]
    thresholds: Mapping[str, float]
    min_lesion_mm3: float
    rule: DetectionRule
    weights_sha256: str
    training_fingerprints: frozenset[str]
    control: bool
    meta: Mapping[str, Any]
    network_heads: tuple[str, ...] = ()
    translation: Mapping[str, Any] | None = None
    patient_threshold: float | None = None
    patient_score: str = "max_prob"
    lesion_calibration: tuple[float, float] | None = None
    spacing_mm: tuple[float, float, float] | None = None
    precision: str = "fp32"

    @property
    def synthesises(self) -> bool:
        """Whether the network synthesises the post-Gd T1w (a ``t1gd`` output)."""
        return TRANSLATION_HEAD in self.network_heads

    @classmethod
    def load(cls, folder: Path | str, device: str | torch.device = "cpu", stem: str = "model") -> TrainedModel:
        """Load and verify ``folder/<stem>.safetensors`` + ``<stem>.json``.

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: tampered or corrupt weights, or a ``model.json`` field out of its schema (named).
        """
        from gdfree.models.checkpoint import load_model

        folder = Path(folder)
        network, meta = load_model(folder, device, stem)
        return cls.from_meta(folder, network, meta, where=folder / f"{stem}.json")

    @classmethod
    def from_meta(cls, folder: Path, network: nn.Module, meta: Mapping[str, Any], where: Path | str) -> TrainedModel:
        """Validate a model description against its schema and bind it to ``network``."""
        record = ModelRecord.from_json(meta, where)  # the fields' types, as training wrote them
        heads = meta["heads"]
        if (not isinstance(heads, list) or not heads or len(set(heads)) != len(heads)
                or any(h not in _HEADS for h in heads)):  # fmt: skip
            raise ValueError(f"{where}: heads: expected distinct names among {', '.join(_HEADS)}, got {heads!r}")
        kwargs = meta["architecture"]["kwargs"]
        if list(kwargs.get("heads", heads)) != heads:
            raise ValueError(f"{where}: heads {heads} differ from the network's {kwargs.get('heads')}")
        oracle = meta.get("oracle", False)
        modalities = meta["modalities"]
        if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
            raise ValueError(f"{where}: modalities: expected a list of modality names, got {modalities!r}")
        try:
            roles = check_input_modalities(modalities, oracle=oracle)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if roles != tuple(modalities):
            raise ValueError(f"{where}: modalities {modalities}: expected canonical names {list(roles)}")
        if kwargs.get("in_channels", len(modalities)) != len(modalities):
            raise ValueError(f"{where}: {len(modalities)} modalities for a network of {kwargs['in_channels']} inputs")
        if meta["normalisation"] not in NORMALISATIONS:
            raise ValueError(f"{where}: normalisation {meta['normalisation']!r}: expected {', '.join(NORMALISATIONS)}")
        network_heads = tuple(heads)
        translation = meta.get("translation")
        if TRANSLATION_HEAD in heads:
            if "T1w" not in modalities:
                raise ValueError(f"{where}: a {TRANSLATION_HEAD} head needs T1w among the modalities {modalities}")
            heads = [h for h in heads if h != TRANSLATION_HEAD]
            if "enhancing" not in heads:
                calib = translation.get("calibration") if isinstance(translation, dict) else None
                if (not isinstance(calib, list) or len(calib) != 2
                        or not all(isinstance(v, int | float) and math.isfinite(v) for v in calib)):  # fmt: skip
                    raise ValueError(f"{where}: translation.calibration: expected [a, b] fitted on validation, "
                                     f"got {translation!r}")  # fmt: skip
                if translation is None or translation.get("t1_channel") != modalities.index("T1w"):
                    raise ValueError(f"{where}: translation.t1_channel: expected {modalities.index('T1w')} (T1w)")
                heads = ["enhancing", *heads]
        elif translation is not None:
            raise ValueError(f"{where}: translation given for a network without a {TRANSLATION_HEAD} head")
        temps = meta.get("temperature", {})
        if not isinstance(temps, dict) or set(temps) - set(heads):
            raise ValueError(f"{where}: temperature: expected head -> value for heads {heads}, got {temps!r}")
        temperature = {h: _positive(temps.get(h, 1.0), f"{where}: temperature.{h}") for h in heads}
        default = _fraction(meta["threshold"], f"{where}: threshold")
        chosen = meta.get("thresholds", {})
        validation = meta.get("validation", {})
        if not isinstance(chosen, dict) or not isinstance(validation, dict):
            raise ValueError(f"{where}: thresholds and validation must be JSON objects")
        thresholds = {}
        for h in heads:
            raw = _fraction(chosen.get(h, validation.get(f"{h}_threshold", default)), f"{where}: thresholds.{h}")
            thresholds[h] = float(sigmoid(logit(raw) / temperature[h], dtype=np.float64))
        min_mm3 = meta.get("min_lesion_mm3", 0.0)
        if (
            isinstance(min_mm3, bool)
            or not isinstance(min_mm3, int | float)
            or not (math.isfinite(min_mm3) and min_mm3 >= 0)
        ):
            raise ValueError(f"{where}: min_lesion_mm3: expected a volume >= 0, got {min_mm3!r}")
        try:
            rule = DetectionRule(**meta.get("rule", {"name": "msseg"}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: rule: {exc}") from exc
        patient, lesion_calibration = _patient_level(record, temperature.get("enhancing", 1.0), where)
        prints = meta.get("training_fingerprints", [])
        config = meta.get("config", {})
        return cls(
            folder=folder, network=network, heads=tuple(heads), modalities=roles, normalisation=meta["normalisation"],
            oracle=oracle, temperature=temperature, thresholds=thresholds, min_lesion_mm3=float(min_mm3),
            rule=rule, weights_sha256=str(meta["weights_sha256"]), training_fingerprints=frozenset(prints),
            control=bool(isinstance(config, dict) and config.get("randomise_labels")), meta=dict(meta),
            network_heads=network_heads, translation=translation if "enhancing" not in network_heads else None,
            patient_threshold=patient, patient_score=record.patient_score, spacing_mm=record.spacing_mm,
            lesion_calibration=lesion_calibration,
        )  # fmt: skip

    @property
    def temperatures(self) -> tuple[float, ...]:
        """Temperatures in head order."""
        return tuple(self.temperature[h] for h in self.heads)

    def probabilities(
        self, image: np.ndarray, device: str | torch.device = "cpu", brain: np.ndarray | None = None,
        spacing_mm: Sequence[float] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Calibrated probabilities of every head for one normalised (C, X, Y, Z) image, (H, X, Y, Z)."""
        return self.predict(image, device, brain, spacing_mm)[0]

    def predict(
        self, image: np.ndarray, device: str | torch.device = "cpu", brain: np.ndarray | None = None,
        spacing_mm: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """(probabilities (H, X, Y, Z) of :attr:`heads`, synthetic post-Gd T1w (X, Y, Z) in T1w z units or None)
        for one normalised (C, X, Y, Z) image; ``brain`` (default: voxels non-zero in some channel) bounds the
        NAWM statistics of an enhancing head read from the synthetic image. With the image's ``spacing_mm``, the
        network runs at :attr:`spacing_mm` and its outputs come back on the image's grid."""
        from gdfree.infer.grid import on_model_grid

        def here(img: np.ndarray, region: np.ndarray | None) -> np.ndarray:
            prob, synth = self._predict_here(img, device, region)
            return prob if synth is None else np.concatenate([prob, synth[None]])

        maps = on_model_grid(here, image, brain, spacing_mm, self.spacing_mm, box_margin(self.network),
                             crop=fov_independent(self.network))  # fmt: skip
        return (maps, None) if not self.synthesises else (maps[:-1], maps[-1])

    def _predict_here(
        self, image: np.ndarray, device: str | torch.device, brain: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`predict` on the grid ``image`` is on."""
        # a network whose output does not depend on the field of view runs on the brain's box only
        crop = (bounding_box(brain, box_margin(self.network)) if brain is not None and fov_independent(self.network)
                else None)  # fmt: skip
        if not self.synthesises:
            probs = predict_volume(self.network, image, device, temperature=self.temperatures, crop=crop,
                                   precision=self.precision)  # fmt: skip
            return probs, None
        logits = predict_volume(self.network, image, device, logits_only=True, crop=crop, precision=self.precision)
        synth = logits[self.network_heads.index(TRANSLATION_HEAD)]
        maps = []
        for h in self.heads:
            if h in self.network_heads:
                z = logits[self.network_heads.index(h)] / self.temperature[h]
                maps.append(sigmoid(z))
            else:  # enhancing, read from the synthetic image
                assert self.translation is not None
                region = np.any(image != 0, axis=0) if brain is None else brain
                t1 = image[int(self.translation["t1_channel"])]
                maps.append(enhancement_probability(enhancement_z(t1, synth, region), self.translation["calibration"]))
        return np.stack(maps), synth

    def sample(
        self,
        image: np.ndarray,
        device: str | torch.device = "cpu",
        *,
        members: Sequence[TrainedModel] = (),
        mc: int = 0,
        flips: bool = False,
        seed: int = 0,
        brain: np.ndarray | None = None,
        mc_layers: str = "all",
        spacing_mm: Sequence[float] | None = None,
        expectation: bool = False,
    ) -> np.ndarray:
        """Probability samples (S, H, X, Y, Z) of this model and ensemble ``members``, each with its own
        temperatures (see :func:`gdfree.infer.sampling.sample_predictions`, also for ``expectation``, one more
        row); networks whose output does not depend on the field of view run on ``brain``'s box only (0 outside
        it). With the image's ``spacing_mm``, they run at :attr:`spacing_mm` (members must share it) and the
        samples come back on the image's grid."""
        from gdfree.infer.grid import on_model_grid

        for other in members:
            if other.spacing_mm != self.spacing_mm:
                raise ValueError(f"{other.folder}: trained at {other.spacing_mm} mm, the first model at "
                                 f"{self.spacing_mm} mm; ensemble members must share their voxel size")  # fmt: skip

        def here(img: np.ndarray, region: np.ndarray | None) -> np.ndarray:
            return self._sample_here(img, device, members, mc, flips, seed, region, mc_layers, expectation)

        return on_model_grid(here, image, brain, spacing_mm, self.spacing_mm, box_margin(self.network),
                             crop=all(fov_independent(m.network) for m in (self, *members)))  # fmt: skip

    def _sample_here(
        self, image: np.ndarray, device: str | torch.device, members: Sequence[TrainedModel], mc: int, flips: bool,
        seed: int, brain: np.ndarray | None, mc_layers: str, expectation: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """:meth:`sample` on the grid ``image`` is on."""
        from gdfree.infer.sampling import sample_predictions

        if self.synthesises:
            raise ValueError(f"{self.folder}: MC dropout, flips and ensembles are not implemented for a model with a "
                             f"{TRANSLATION_HEAD} output; predict without them")  # fmt: skip
        models = [self, *members]
        for other in members:
            self.check_member(other)
        box = (bounding_box(brain, max(box_margin(m.network) for m in models))
               if brain is not None and all(fov_independent(m.network) for m in models) else None)  # fmt: skip
        inner = image if box is None else np.ascontiguousarray(image[(slice(None), *box)])
        samples = sample_predictions([m.network for m in models], inner, device, mc=mc, flips=flips,
                                     temperatures=[m.temperatures for m in models], seed=seed,
                                     mc_layers=mc_layers, expectation=expectation)  # fmt: skip
        if box is None:
            return samples
        full = np.zeros((*samples.shape[:2], *image.shape[1:]), np.float32)
        full[(slice(None), slice(None), *box)] = samples
        return full

    def masks(self, probs: Mapping[str, np.ndarray], spacing_mm: Sequence[float]) -> dict[str, np.ndarray]:
        """Each head's probability map (calibrated) thresholded at its own threshold; the enhancing mask then
        loses its components of ``min_lesion_mm3`` or less (under the rule's connectivity)."""
        masks = {h: np.asarray(p) >= self.thresholds[h] for h, p in probs.items()}
        if self.min_lesion_mm3 > 0 and "enhancing" in masks:
            labels, _ = label_components(masks["enhancing"], spacing_mm, self.rule.connectivity, self.min_lesion_mm3)
            masks["enhancing"] = labels > 0
        return masks

    def lesion_rule(self) -> DetectionRule:
        """The rule that forms the predicted enhancing lesions: the model's rule, with its minimum volume."""
        return replace(self.rule, min_volume_mm3=max(self.rule.min_volume_mm3, self.min_lesion_mm3))

    def with_members(self, members: Sequence[TrainedModel]) -> TrainedModel:
        """This model as the head of an ensemble with ``members`` (checked): each head's threshold becomes the mean of
        the members' own (each chosen on that member's validation patients), for thresholding the mean of their
        probabilities. With the first member's threshold, the ensemble's masks depended on which member came first
        and, where members' thresholds differ, marked less than any member (docs/real_lesions.md). The minimum
        lesion volume, the patient score and its threshold stay this model's."""
        for other in members:
            self.check_member(other)
        if not members:
            return self
        models = (self, *members)
        return replace(self, thresholds={h: float(np.mean([m.thresholds[h] for m in models])) for h in self.thresholds})

    def check_member(self, other: TrainedModel) -> None:
        """Refuse an ensemble member with other heads, inputs, normalisation or oracle status."""
        for key in ("heads", "modalities", "normalisation", "oracle"):
            if getattr(other, key) != getattr(self, key):
                raise ValueError(f"ensemble member {other.folder}: {key} {getattr(other, key)} differ from "
                                 f"{self.folder}'s {getattr(self, key)}")  # fmt: skip

    def refuse_if_seen(self, case_id: str, fingerprints: Sequence[str], what: str = "predicting") -> None:
        """Raise ValueError if any of a case's input-file fingerprints trained or validated this model."""
        if self.training_fingerprints.intersection(fingerprints):
            raise ValueError(
                f"{case_id}: its input files are identical to a training/validation case of the model in "
                f"{self.folder}; {what} it would not be a test (pass --allow-training-cases to do it anyway)"
            )

    def refuse_control(self) -> None:
        """Raise ValueError for a label-randomised control run."""
        if self.control:
            raise ValueError(f"{self.folder}: trained with randomise_labels (the control of the attribution "
                             "sanity checks), not a model to predict with")  # fmt: skip
