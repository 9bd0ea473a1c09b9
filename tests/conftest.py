"""Shared fixtures: the shared real data (skipped when absent) and a tiny synthetic cohort."""

from __future__ import annotations

from pathlib import Path

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


def oblique_affine(spacing: tuple[float, float, float], degrees: float = 20.0) -> np.ndarray:
    """An anisotropic affine rotated about two axes, with an origin off zero."""
    a, b = np.deg2rad(degrees), np.deg2rad(degrees / 2)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag(spacing)
    affine[:3, 3] = (-90.5, 12.25, -40.0)
    return affine
