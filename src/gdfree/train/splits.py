"""Patient-level splits: every exam of a patient lands in the same part, whatever its session."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdfree.train.config import SplitConfig

__all__ = ["derangement", "split_patients"]


def split_patients(patients: Sequence[str], cfg: SplitConfig) -> dict[str, list[str]]:
    """Assign patient keys to ``train``/``val``/``test``.

    ``test_subjects`` (if any) are the test set; else the first ``round(test_fraction * n)`` of a seeded
    permutation. ``val_subjects`` (if any) are the validation set; else the rest is split by ``val_fraction``
    or, with ``n_folds`` > 1, into k folds of which ``fold`` is validation. ``train_subjects`` (if any) are
    the training set and every other patient goes to ``unused`` (a learning curve on part of a cohort).
    Every part is sorted.

    Raises:
        ValueError: duplicate patients, named subjects not in the data or in two parts, or no patient left
            for training.
    """
    patients = list(patients)
    if len(set(patients)) != len(patients):
        raise ValueError("split: patient keys must be unique")
    rng = np.random.default_rng(cfg.seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    for name in ("test_subjects", "val_subjects", "train_subjects"):
        unknown = sorted(set(getattr(cfg, name)) - set(patients))
        if unknown:
            raise ValueError(f"split.{name}: not in the training data: {', '.join(unknown)}")
    named = [set(cfg.test_subjects), set(cfg.val_subjects), set(cfg.train_subjects)]
    if (named[0] & named[1]) or (named[0] & named[2]) or (named[1] & named[2]):
        raise ValueError("split: a patient is named in two of test_subjects, val_subjects, train_subjects")
    if cfg.test_subjects:
        test = [p for p in order if p in set(cfg.test_subjects)]
    else:
        test = order[: round(cfg.test_fraction * len(order))]
    rest = [p for p in order if p not in set(test)]
    if cfg.val_subjects:
        val = [p for p in rest if p in set(cfg.val_subjects)]
    elif cfg.n_folds > 1:
        folds = [rest[i :: cfg.n_folds] for i in range(cfg.n_folds)]
        val = folds[cfg.fold]
    else:
        val = rest[: round(cfg.val_fraction * len(rest))]
    train = [p for p in rest if p not in set(val)]
    unused = []
    if cfg.train_subjects:
        unused = [p for p in train if p not in set(cfg.train_subjects)]
        train = [p for p in train if p in set(cfg.train_subjects)]
    if not train:
        raise ValueError(f"split: no patient left for training out of {len(patients)}")
    parts = {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    if unused:
        parts["unused"] = sorted(unused)
    assert not (set(parts["train"]) & set(parts["test"])) and not (set(parts["train"]) & set(parts["val"]))
    return parts


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of 0..n-1 with no fixed point (every patient paired with another one).

    Raises:
        ValueError: n < 2.
    """
    if n < 2:
        raise ValueError(f"derangement: needs at least 2 items, got {n}")
    while True:  # rejection: about e tries on average
        order = rng.permutation(n)
        if not np.any(order == np.arange(n)):
            return order
