"""The lesion-level activity classifier: gradient boosting (LightGBM) on the features of each visible lesion.

Fitted on the lesions of training patients, calibrated (Platt: a logistic regression on the booster's raw
score) and given its F1-best threshold on the lesions of validation patients, so ``p_active`` is a
probability. With a network (a :class:`gdfree.infer.model.TrainedModel`), its probability maps add features
(:mod:`gdfree.activity.features`); fit it then on patients the network did not train on, or its scores
there are optimistic. Folder::

    activity.json        features, inputs, calibration, threshold, validation metrics, training fingerprints,
                         the network's weights hash (if any), the SHA-256 of the model file and of its own
                         fields (``meta_sha256``)
    activity_model.txt   the LightGBM booster as text (no pickle: loading runs no code)

Loading checks both hashes (an edited calibration or threshold is refused like an edited model); applying it
to a case whose input files trained or validated it is refused (:meth:`ActivityClassifier.refuse_if_seen`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.activity.features import feature_names, label_case_lesions, lesion_activity_labels, lesion_features
from gdfree.arrays import sigmoid
from gdfree.data.cases import NORMALISATION, WM_RATIO, ArrayCase, normalise
from gdfree.io.images import atomic_path
from gdfree.io.tables import write_json
from gdfree.types import PAIR_ROLES

__all__ = [
    "FEATURE_REFERENCES", "ActivityClassifier", "ActivityConfig", "CaseLesions", "case_lesions", "feature_image",
    "fit_activity", "fit_activity_dataset", "meta_digest",
]  # fmt: skip

MODEL_FILE, META_FILE = "activity_model.txt", "activity.json"
FEATURE_REFERENCES = ("network", "white-matter")


@dataclass(frozen=True)
class ActivityConfig:
    """LightGBM settings (deterministic with ``seed``) and the smallest lesion scored."""

    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 10
    min_volume_mm3: float = 0.0
    seed: int = 0
    feature_reference: str = "network"  # or "white-matter": intensity features as ratios to the case's white matter

    def __post_init__(self) -> None:
        if self.feature_reference not in FEATURE_REFERENCES:
            raise ValueError(f"activity: feature_reference must be one of {', '.join(FEATURE_REFERENCES)}, "
                             f"got {self.feature_reference!r}")  # fmt: skip
        if self.n_estimators < 1 or self.num_leaves < 2 or self.min_child_samples < 1 or self.learning_rate <= 0:
            raise ValueError("activity: n_estimators >= 1, num_leaves >= 2, min_child_samples >= 1, learning_rate > 0")


@dataclass
class CaseLesions:
    """The lesions of one case: label map (0 background, 1..n), features (n, F), activity labels (n,) or None."""

    case_id: str
    labels: np.ndarray
    n: int
    features: np.ndarray
    active: np.ndarray | None


def feature_image(
    case: ArrayCase, modalities: Sequence[str], reference: str = "network", normalisation: str = NORMALISATION
) -> np.ndarray:
    """The channels the intensity features are computed on: ``network``, the case's image as normalised for the
    network; ``white-matter``, each channel as a ratio to the case's white matter (``wm-ratio-clip10``, white
    matter from the T1w), rebuilt from the network's normalisation through ``case.raw_stats``, so that real and
    phantom lesions are on one scale whatever the brain's spread (a voxel the network's normalisation clipped
    stays at the clip's raw level). The prior-exam difference channel keeps its own unit. ``normalisation``: the
    case's (nothing to redo when it is already ``wm-ratio-clip10``)."""
    if reference == "network" or normalisation == WM_RATIO:
        return case.image
    if not case.raw_stats:
        raise ValueError(f"{case.case_id}: no raw intensity statistics to refer the features to white matter")
    raw = np.stack([np.where(case.brain, centre + unit * case.image[c], 0.0).astype(np.float32)
                    for c, (centre, unit) in enumerate(case.raw_stats)])  # fmt: skip
    out = normalise(raw, case.brain, WM_RATIO, modalities=modalities)
    for c, m in enumerate(modalities):
        if m in PAIR_ROLES and m != "priorFLAIR":
            out[c] = case.image[c]
    return out


def case_lesions(
    case: ArrayCase, lesion: np.ndarray, network: Any = None, device: str = "cpu", min_volume_mm3: float = 0.0,
    *, modalities: Sequence[str] = (), reference: str = "network",
) -> CaseLesions:  # fmt: skip
    """Label the lesions of ``lesion`` (an all-lesion mask on the case's grid) and compute their features;
    ``network``: a TrainedModel whose probability maps add features; ``reference``: :func:`feature_image`'s
    (``modalities``: the case's channel roles). The activity label comes from the case's ``enhancing`` label
    when it has one."""
    labels, n = label_case_lesions(lesion, case.spacing_mm, min_volume_mm3)
    probs = None
    if network is not None:
        maps = network.probabilities(case.image, device, case.brain, case.spacing_mm)
        probs = {h: np.where(case.brain, maps[i], 0.0) for i, h in enumerate(network.heads)}
    norm = getattr(network, "normalisation", NORMALISATION)
    feats = lesion_features(feature_image(case, modalities, reference, norm), labels, n, case.spacing_mm, probs)
    enh = case.labels.get("enhancing")
    return CaseLesions(case.case_id, labels, n, feats, None if enh is None else lesion_activity_labels(labels, n, enh))


def _f1_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising the F1 of calling lesions with p >= threshold active."""
    best = (0.5, 0.0)
    for t in np.round(np.arange(0.05, 0.96, 0.01), 2):
        call = p >= t
        tp = int((call & y).sum())
        f1 = 2 * tp / max(int(call.sum()) + int(y.sum()), 1)
        if f1 > best[1]:
            best = (float(t), f1)
    return best


@dataclass(frozen=True, eq=False)
class ActivityClassifier:
    """A fitted lesion classifier with everything needed to apply it as it was validated.

    Attributes:
        booster: the LightGBM booster. features: column names. modalities: input channels in order.
        network_heads: probability heads of the network whose maps are features ('' sha: none).
        network_sha256: the weights hash of that network (checked when applied).
        calibration: (a, b) of p = sigmoid(a * raw + b). threshold: the validation F1-best threshold on p.
        training_fingerprints: SHA-256 of every input file it was fitted or validated on.
        meta: the whole ``activity.json``.
    """

    booster: Any
    features: tuple[str, ...]
    modalities: tuple[str, ...]
    network_heads: tuple[str, ...]
    network_sha256: str
    calibration: tuple[float, float]
    threshold: float
    training_fingerprints: frozenset[str]
    meta: dict[str, Any]

    @property
    def feature_reference(self) -> str:
        """What the intensity features are referred to (:func:`feature_image`); classifiers fitted before the
        option existed used the network's normalisation."""
        return str(self.meta.get("config", {}).get("feature_reference", "network"))

    def p_active(self, features: np.ndarray) -> np.ndarray:
        """Calibrated probability that each lesion (row of ``features``) is active."""
        if features.shape[0] == 0:
            return np.zeros(0, np.float32)
        raw = self.booster.predict(features, raw_score=True)
        a, b = self.calibration
        return sigmoid(a * raw + b)

    def check_network(self, network: Any) -> None:
        """Refuse a network other than the one whose maps it was fitted on (or one when it used none)."""
        sha = getattr(network, "weights_sha256", "") if network is not None else ""
        if sha != self.network_sha256:
            want = f"the network with weights {self.network_sha256[:12]}" if self.network_sha256 else "no network"
            raise ValueError(f"activity classifier: fitted with {want}, applied with "
                             f"{'weights ' + sha[:12] if sha else 'none'}")  # fmt: skip

    def refuse_if_seen(self, case_id: str, fingerprints: Sequence[str]) -> None:
        """Raise ValueError if a case's input files trained or validated this classifier."""
        if self.training_fingerprints.intersection(fingerprints):
            raise ValueError(f"{case_id}: its input files were used to fit or validate the activity classifier; "
                             "scoring it would not be a test")  # fmt: skip

    def save(self, folder: Path | str) -> Path:
        """Write ``activity_model.txt`` and ``activity.json`` (atomically) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        text = self.booster.model_to_string()
        with atomic_path(folder / MODEL_FILE) as tmp:
            tmp.write_text(text, encoding="utf-8")
        meta = {k: v for k, v in self.meta.items() if k != "meta_sha256"}
        meta["model_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        write_json(folder / META_FILE, {**meta, "meta_sha256": meta_digest(meta)})
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> ActivityClassifier:
        """Load and verify a saved classifier.

        Raises:
            FileNotFoundError: a file is missing. ValueError: the model file does not match its recorded hash,
                or ``activity.json`` lacks a field (named).
        """
        import lightgbm as lgb

        folder = Path(folder)
        meta_path, model_path = folder / META_FILE, folder / MODEL_FILE
        for p in (meta_path, model_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: not found; is {folder} an activity classifier folder?")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        text = model_path.read_text(encoding="utf-8")
        if hashlib.sha256(text.encode()).hexdigest() != meta.get("model_sha256"):
            raise ValueError(f"{model_path}: its SHA-256 differs from {meta_path}'s model_sha256 (changed or corrupt)")
        if meta.get("meta_sha256") != meta_digest({k: v for k, v in meta.items() if k != "meta_sha256"}):
            raise ValueError(f"{meta_path}: its fields differ from the ones it was saved with (meta_sha256; an edited "
                             "calibration, threshold or feature list would score lesions unnoticed); refit with "
                             "gdfree activity")  # fmt: skip
        try:
            a, b = (float(v) for v in meta["calibration"])
            return cls(
                booster=lgb.Booster(model_str=text), features=tuple(meta["features"]),
                modalities=tuple(meta["modalities"]), network_heads=tuple(meta["network_heads"]),
                network_sha256=str(meta["network_sha256"]), calibration=(a, b), threshold=float(meta["threshold"]),
                training_fingerprints=frozenset(meta["training_fingerprints"]), meta=meta,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{meta_path}: missing or bad field ({exc})") from exc


def meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of ``activity.json``'s fields (keys sorted, compact JSON): what ``meta_sha256`` records."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _config_record(cfg: ActivityConfig) -> dict[str, Any]:
    """``cfg`` as recorded in ``activity.json``; the default feature reference is left out, so a classifier fitted
    as before the option existed is recorded as it was."""
    record = asdict(cfg)
    if record["feature_reference"] == "network":
        del record["feature_reference"]
    return record


def _stack(items: Sequence[CaseLesions]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with_labels = [c for c in items if c.active is not None]
    if not with_labels:
        raise ValueError("activity: no case with an enhancing label")
    x = np.concatenate([c.features for c in with_labels])
    y = np.concatenate([c.active for c in with_labels])
    groups = np.concatenate([np.full(c.n, i) for i, c in enumerate(with_labels)])
    return x, y.astype(bool), groups


def fit_activity(
    train: Sequence[ArrayCase],
    val: Sequence[ArrayCase],
    modalities: Sequence[str],
    cfg: ActivityConfig | None = None,
    network: Any = None,
    device: str = "cpu",
) -> ActivityClassifier:
    """Fit on the lesions (``lesion`` label) of ``train``, calibrate and choose the threshold on ``val``.

    Raises:
        ValueError: a case without a lesion label, no active or no inactive lesion in either part, or a
            validation patient that is also a training patient.
    """
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression

    from gdfree.metrics.patient import roc_auc

    cfg = cfg or ActivityConfig()
    overlap = {c.subject for c in train} & {c.subject for c in val}
    if overlap:
        raise ValueError(f"activity: patients {sorted(overlap)} are in both the training and validation parts")
    parts = []
    for name, cases in (("training", train), ("validation", val)):
        for c in cases:
            if c.labels.get("lesion") is None:
                raise ValueError(f"activity: {name} case {c.case_id} has no lesion label")
        items = [case_lesions(c, np.asarray(c.labels["lesion"]), network, device, cfg.min_volume_mm3,
                              modalities=modalities, reference=cfg.feature_reference) for c in cases]  # fmt: skip
        x, y, groups = _stack(items)
        if y.all() or not y.any():
            raise ValueError(f"activity: the {name} lesions are all {'active' if y.all() else 'inactive'}")
        parts.append((x, y, groups))
    (x_tr, y_tr, _), (x_va, y_va, g_va) = parts
    model = lgb.LGBMClassifier(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                               num_leaves=cfg.num_leaves, min_child_samples=cfg.min_child_samples,
                               random_state=cfg.seed, deterministic=True, force_row_wise=True, n_jobs=1,
                               verbose=-1).fit(x_tr, y_tr)  # fmt: skip
    raw = np.asarray(model.booster_.predict(x_va, raw_score=True))
    platt = LogisticRegression(C=1e4).fit(raw[:, None], y_va)
    a, b = float(platt.coef_[0, 0]), float(platt.intercept_[0])
    p_va = sigmoid(a * raw + b, dtype=np.float64)
    threshold, f1 = _f1_threshold(y_va, p_va)
    heads = tuple(network.heads) if network is not None else ()
    meta: dict[str, Any] = {
        "kind": "lightgbm", "config": _config_record(cfg), "features": feature_names(modalities, heads),
        "modalities": list(modalities), "normalisation": getattr(network, "normalisation", NORMALISATION),
        "network_heads": list(heads),
        "network_sha256": getattr(network, "weights_sha256", "") if network is not None else "",
        "calibration": [a, b], "threshold": threshold,
        "validation": {"lesion_auc": roc_auc(y_va, p_va), "lesion_f1": f1, "n_lesions": int(y_va.size),
                       "n_active": int(y_va.sum()), "n_patients": len(set(g_va.tolist()))},
        "training": {"n_lesions": int(y_tr.size), "n_active": int(y_tr.sum()), "n_cases": len(train)},
        "train_cases": [c.case_id for c in train], "val_cases": [c.case_id for c in val],
        "training_fingerprints": sorted({f for c in (*train, *val) for f in c.fingerprints}),
    }  # fmt: skip
    if math.isnan(meta["validation"]["lesion_auc"]):
        meta["validation"]["lesion_auc"] = None
    return ActivityClassifier(
        booster=model.booster_, features=tuple(meta["features"]), modalities=tuple(modalities), network_heads=heads,
        network_sha256=meta["network_sha256"], calibration=(a, b), threshold=threshold,
        training_fingerprints=frozenset(meta["training_fingerprints"]), meta=meta,
    )  # fmt: skip


def fit_activity_dataset(
    datasets: Sequence[Path | str],
    out: Path | str,
    *,
    modalities: Sequence[str] = ("T1w", "T2w", "FLAIR"),
    split: Any = None,
    cfg: ActivityConfig | None = None,
    network: Path | str | None = None,
    device: str = "cpu",
) -> ActivityClassifier:
    """Fit a classifier on the cases of ``datasets`` (with lesion and enhancing labels) split by patient with
    ``split`` (a :class:`gdfree.train.config.SplitConfig`; its test patients are left out and listed), with the
    probability maps of the trained ``network`` run as features if given; save it into ``out``.

    Raises:
        ValueError: no usable case, a network's training case among these, or what :func:`fit_activity` raises.
    """
    from gdfree.data.cases import load_array_case
    from gdfree.infer.model import TrainedModel
    from gdfree.io.adapters import discover
    from gdfree.train.config import SplitConfig
    from gdfree.train.splits import split_patients

    split = split or SplitConfig(test_fraction=0.0)
    found = [(str(d), c) for d in datasets for c in discover(d) if not c.missing(modalities)]
    found = [(d, c) for d, c in found if "lesion" in c.masks and "enhancing" in c.masks]
    if not found:
        raise ValueError(f"activity: no case with {', '.join(modalities)} and lesion + enhancing masks in "
                         f"{[str(d) for d in datasets]}")  # fmt: skip
    parts = split_patients(sorted({f"{d}:{c.subject}" for d, c in found}), split)
    part_of = {p: name for name, ps in parts.items() for p in ps}
    model = TrainedModel.load(network, device) if network is not None else None
    loaded: dict[str, list[ArrayCase]] = {"train": [], "val": []}
    for d, c in found:
        part = part_of[f"{d}:{c.subject}"]
        if part in loaded:
            case = load_array_case(c, modalities, ("lesion", "enhancing"),
                                   normalisation=model.normalisation if model is not None else NORMALISATION)
            if model is not None and model.training_fingerprints.intersection(case.fingerprints):
                raise ValueError(f"{c.case_id} of {d}: trained or validated the network {network}; its maps there "
                                 "are optimistic. Fit the classifier on patients the network never saw")  # fmt: skip
            loaded[part].append(case)
    clf = fit_activity(loaded["train"], loaded["val"], modalities, cfg, model, device)
    clf.meta["split"] = parts
    clf.save(out)
    return clf
