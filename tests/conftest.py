"""Shared fixtures: the shared real data (skipped when absent) and a tiny synthetic cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms_data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 4 mm subjects, seed 7."""
    from gdfree.phantom.cohort import PhantomConfig, write_cohort

    out = tmp_path_factory.mktemp("cohort")
    write_cohort(out, PhantomConfig(resolution_mm=4), 3, seed=7)
    return out


@pytest.fixture(scope="session")
def pair_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 2 mm subject with a prior ``ses-1`` and a follow-up ``ses-2`` (new lesions, some still enhancing), seed 5."""
    from gdfree.phantom.cohort import write_cohort
    from gdfree.phantom.config import PhantomConfig
    from gdfree.phantom.longitudinal import PairConfig

    out = tmp_path_factory.mktemp("pairs") / "bids"
    cfg = PhantomConfig(resolution_mm=2, lesions_min=12, lesions_max=16, active_count_probs=(0.0, 0.0, 1.0))
    write_cohort(out, cfg, 1, seed=5, timepoints=2,
                 pair=PairConfig(new_inactive=0.5, move_degrees=(2.0, 4.0), move_mm=(2.0, 4.0)))  # fmt: skip
    return out


def oblique_affine(spacing: tuple[float, float, float], degrees: float = 20.0) -> np.ndarray:
    """An anisotropic affine rotated about two axes, with an origin off zero."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = (-90.5, 12.25, -40.0)
    return affine


def untrained_run(folder: Path, seed: int = 0) -> Path:
    """An untrained tiny model (T1w, T2w, FLAIR) in a run folder: what predict needs when the weights do not
    matter."""
    import torch

    from gdfree.models import MultitaskUNet
    from gdfree.models.checkpoint import save_model

    torch.manual_seed(seed)
    net = MultitaskUNet(3, ("enhancing", "lesion"), channels=(4, 8), strides=(2, 2), num_res_units=1,
                        full_res_channels=4)  # fmt: skip
    kwargs = {"in_channels": 3, "heads": ["enhancing", "lesion"], "channels": [4, 8], "strides": [2, 2],
              "num_res_units": 1, "full_res_channels": 4}  # fmt: skip
    save_model(folder, net, {"architecture": {"class": "MultitaskUNet", "kwargs": kwargs},
                             "heads": ["enhancing", "lesion"], "modalities": ["T1w", "T2w", "FLAIR"],
                             "normalisation": "zscore-brain-clip5", "threshold": 0.5})  # fmt: skip
    return folder


def nan_block(cohort: Path, subject: str = "002") -> Path:
    """Write NaN into a 3-voxel block of a cohort subject's FLAIR (a copy of the cohort!); returns its path."""
    from gdfree.io.images import read_volume, write_volume

    path = cohort / f"sub-{subject}" / "anat" / f"sub-{subject}_FLAIR.nii.gz"
    vol = read_volume(path)
    data = np.asarray(vol.data, np.float32).copy()
    data[8:11, 8:11, 8:11] = np.nan
    write_volume(vol.with_data(data), path)
    return path


def tiny_train_config(cohort: Path, **over: object) -> Any:
    """The tiny network and 4-step schedule the end-to-end tests train on ``cohort`` (``over`` replaces fields)."""
    from gdfree.train import DatasetSpec, SplitConfig, TrainConfig

    base = dict(
        datasets=(DatasetSpec(str(cohort)),), channels=(4, 8), strides=(2, 2), num_res_units=1,
        full_res_channels=4, patch_size=16, batch_size=2, max_steps=4, val_every=2, warmup_steps=1,
        split=SplitConfig(val_fraction=0.5, test_fraction=0.34, seed=0),
    )  # fmt: skip
    base.update(over)
    return TrainConfig(**base)  # type: ignore[arg-type]
